"""A typed TypeScript client drives a whole flow against a real ``chathistory serve`` (SPEC
section 13): ``openapi-typescript`` generates the types from the running server's
``/openapi.json``, ``tsc --strict`` compiles ``tests/ts/flow.ts`` (openapi-fetch, no casts, no
``any``) against them, and Node runs the result. ``tests/ts/no-casts.mjs`` first makes sure the
flow is typed for real (no ``as`` casts, no non-null assertions, no ``any``, no
``@ts-ignore``).

The toolchain is pinned by ``tests/ts/package.json`` and its lockfile and installed with
``npm ci`` into ``tests/ts/node_modules`` (ignored by git; reinstalled only when the lockfile
changes). Without Node.js and npm the test is skipped, except in CI (``CI`` set), where it
fails: ``.ci/run`` installs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.fixtures.http import SECRET
from tests.http.test_http_serve import serving  # the same real-process helper

TS = Path(__file__).parent / "ts"
NODE_MODULES = TS / "node_modules"
INSTALLED_MARK = NODE_MODULES / ".chathistory-lock.sha256"
USER = "ts-client-user"
MIN_NODE = 18


def _toolchain() -> tuple[str, str]:
    """``node`` and ``npm``, or a skip (a failure in CI) saying what is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    reason = None
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        reason = f"{missing} not installed: the TypeScript client test needs Node.js and npm"
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
        major = int(version.stdout.strip().lstrip("v").split(".")[0])
        if major < MIN_NODE:
            reason = f"Node.js {version.stdout.strip()} is too old (needs {MIN_NODE} or newer)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (in CI it must run: .ci/run installs them)")
        pytest.skip(reason)
    assert node is not None and npm is not None
    return node, npm


def _run(*args: str, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def toolchain() -> tuple[str, str]:
    """Node and the pinned packages: ``npm ci`` from the lockfile unless already installed."""
    node, npm = _toolchain()
    lock = hashlib.sha256((TS / "package-lock.json").read_bytes()).hexdigest()
    if not (INSTALLED_MARK.exists() and INSTALLED_MARK.read_text() == lock):
        _run(npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", cwd=TS, timeout=600)
        INSTALLED_MARK.write_text(lock)
    return node, npm


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_typescript_client_drives_a_whole_flow(toolchain: tuple[str, str], tmp_path: Path) -> None:
    node, _ = toolchain
    work = tmp_path / "client"
    work.mkdir()
    for name in ("flow.ts", "tsconfig.json", "package.json"):
        shutil.copy(TS / name, work / name)
    (work / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    bin_dir = NODE_MODULES / ".bin"
    # Typed for real: no casts, non-null assertions, `any` or silenced checks (syntax tree).
    assert _run(node, str(TS / "no-casts.mjs"), "flow.ts", cwd=work, timeout=60) == ""
    token = jwt.encode({"sub": USER, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    with serving(tmp_path, CHATHISTORY_JWT_SECRET=SECRET) as (base_url, _process):
        _run(
            str(bin_dir / "openapi-typescript"),
            f"{base_url}/openapi.json",
            "--output",
            "schema.d.ts",
            cwd=work,
            timeout=120,
            env=os.environ | {"NO_COLOR": "1"},
        )
        # tsconfig.json: strict, and no JavaScript unless the flow type-checks.
        _run(str(bin_dir / "tsc"), "--project", "tsconfig.json", cwd=work, timeout=180)
        output = _run(
            node,
            "out/flow.js",
            cwd=work,
            timeout=120,
            env=os.environ
            | {"CHATHISTORY_URL": base_url, "CHATHISTORY_USER": USER, "CHATHISTORY_TOKEN": token},
        )
        summary = json.loads(output.strip().splitlines()[-1])
        gone = httpx.get(
            f"{base_url}/api/{USER}/conversations/{summary['conversation']}",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert summary["seqs"] == [1, 2, 3, 4, 5]
    assert summary["pages"] == 3
    assert summary["calls"] == [
        'call_weather:weather({"city": "Lisbon"})',
        "call_sql:sql<SELECT 1>",
    ]
    assert summary["window"] == [
        "user: What is the weather in Lisbon this weekend? | "
        "[image https://example.com/lisbon.png detail=low]",
        'assistant:  calls call_weather:weather({"city": "Lisbon"}), call_sql:sql<SELECT 1>',
        "tool call_weather: 22 °C, sunny",
        "tool call_sql: 1",
        "assistant: Sunny, 22 °C: pack light.",
    ]
    assert gone.status_code == 404  # the flow's last step, seen from outside
