"""CLI commands: token; import, export and purge with the service's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pydantic
import pytest
from fastapi.testclient import TestClient

from chathistory.config import Settings
from chathistory.http.app import create_app
from tests.fixtures.http import SECRET


def test_token_is_verifiable() -> None:
    env = {**os.environ, "CHATHISTORY_JWT_SECRET": SECRET, "CHATHISTORY_JWT_ISSUER": "me"}
    done = subprocess.run(
        [sys.executable, "-m", "chathistory.cli", "token", "alice", "--hours", "2"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"], issuer="me")
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 7200


def test_serve_help_lists_every_setting() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "chathistory.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    missing = [
        name
        for name, field in Settings.model_fields.items()
        if f"CHATHISTORY_{name.upper()} (default" not in done.stdout or not field.description
    ]
    assert not missing, missing
    # The options name their variables too (rich markup would eat an unescaped "[env: ...]").
    for option in ("HOST", "PORT", "DATABASE_URL", "WORKERS", "INSECURE_NO_AUTH"):
        assert f"[env: CHATHISTORY_{option}" in done.stdout, option


def test_token_needs_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHATHISTORY_JWT_SECRET"}
    done = subprocess.run(
        [sys.executable, "-m", "chathistory.cli", "token", "alice"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 1
    assert "CHATHISTORY_JWT_SECRET" in done.stderr


# -- import, export and purge read the service's settings ------------------------------------

_OLD = "2020-01-01T00:00:00.000000+00:00"


def _file(path: Path, content: str, status: str = "completed") -> Path:
    message = {"id": str(uuid.uuid4()), "seq": 1, "created_at": _OLD, "role": "assistant"}
    message |= {"content": content, "status": status}
    record = {"id": str(uuid.uuid4()), "user_id": "ann", "title": None, "metadata": {}}
    record |= {"created_at": _OLD, "updated_at": _OLD, "messages": [message]}
    path.write_text(json.dumps(record) + "\n")
    return path


def _cli(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """The command with these CHATHISTORY_* settings in its environment (and no others)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATHISTORY_")}
    env |= {f"CHATHISTORY_{name.upper()}": value for name, value in settings.items()}
    return subprocess.run(
        [sys.executable, "-m", "chathistory.cli", *args], capture_output=True, text=True, env=env
    )


def _service(url: str, **settings: str) -> Iterator[TestClient]:
    """The HTTP app as `serve` builds it: its store opened from these same settings."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("CHATHISTORY_")]:
            patch.delenv(name)
        for name, value in {**settings, "database_url": url, "insecure_no_auth": "true"}.items():
            patch.setenv(f"CHATHISTORY_{name.upper()}", value)
        with TestClient(create_app(Settings())) as client:
            yield client


def _service_takes(url: str, content: str, **settings: str) -> bool:
    for client in _service(url, **settings):
        created = client.post("/api/ann/conversations", json={})
        added = client.post(
            f"/api/ann/conversations/{created.json()['id']}/messages",
            json={"role": "user", "content": content},
        )
        assert added.status_code == 201 or "the limit is" in added.text, added.text
        return added.status_code == 201
    raise AssertionError("no service")


def test_import_applies_the_content_limit_the_service_applies(tmp_path: Path) -> None:
    """CHATHISTORY_MAX_CONTENT_CHARS lowered: the service refuses 100 characters and so does
    `import`; raised again, both take them."""
    url = f"sqlite:///{tmp_path / 'limits.db'}"
    source = _file(tmp_path / "one.jsonl", "x" * 100)
    assert not _service_takes(url, "x" * 100, max_content_chars="50")
    refused = _cli("import", str(source), "--database-url", url, max_content_chars="50")
    assert refused.returncode == 1, refused.stderr
    assert "the limit is 50" in refused.stderr
    assert _service_takes(url, "x" * 100, max_content_chars="100")
    taken = _cli("import", str(source), "--database-url", url, max_content_chars="100")
    assert taken.returncode == 0, taken.stderr
    assert "imported 1 conversations (1 messages)" in taken.stderr


def test_export_applies_the_stream_timeout_the_service_applies(tmp_path: Path) -> None:
    """A message streaming since 2020 reads as incomplete after the default timeout, and as
    still in progress under a timeout of centuries: the same in `export` and in the service."""
    url = f"sqlite:///{tmp_path / 'stream.db'}"
    source = _file(tmp_path / "streaming.jsonl", "partial", status="in_progress")
    assert _cli("import", str(source), "--database-url", url).returncode == 0
    for timeout, status in ((None, "incomplete"), ("9000000000", "in_progress")):
        given = {} if timeout is None else {"stream_timeout_seconds": timeout}
        exported = _cli("export", "--database-url", url, **given)
        assert exported.returncode == 0, exported.stderr
        [message] = json.loads(exported.stdout)["messages"]
        assert message.get("status") == status
        for client in _service(url, **given):
            [conv] = client.get("/api/ann/conversations").json()["data"]
            page = client.get(f"/api/ann/conversations/{conv['id']}/messages").json()
            assert page["data"][0]["status"] == status


def test_import_export_and_purge_refuse_a_bad_setting_as_the_service_does(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHATHISTORY_MAX_CONTENT_CHARS", "0")
        with pytest.raises(pydantic.ValidationError, match="max_content_chars"):
            Settings()
    source = _file(tmp_path / "one.jsonl", "hello")
    for args in (["import", str(source)], ["export"], ["purge", "--dry-run"]):
        done = _cli(*args, "--database-url", url, max_content_chars="0")
        assert done.returncode == 1, (args, done.stderr)
        assert "CHATHISTORY_MAX_CONTENT_CHARS" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_import_round_trips_a_conversation_over_the_line_buffer(tmp_path: Path) -> None:
    """A conversation on a line longer than --line-buffer-bytes imports whole (read from a
    temporary file), and exports back byte for byte."""
    url = f"sqlite:///{tmp_path / 'long.db'}"
    record = json.loads(_file(tmp_path / "seed.jsonl", "first").read_text())
    for seq in range(2, 201):
        message = {"id": str(uuid.uuid4()), "seq": seq, "created_at": _OLD, "role": "user"}
        record["messages"].append(message | {"content": f"message {seq} " + "ü" * 100})
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps(record) + "\n")
    assert long.stat().st_size > 40_000
    done = _cli("import", str(long), "--database-url", url, "--line-buffer-bytes", "1000")
    assert done.returncode == 0, done.stderr
    assert "imported 1 conversations (200 messages)" in done.stderr
    out = tmp_path / "out.jsonl"
    assert _cli("export", "--database-url", url, "-o", str(out)).returncode == 0
    again = tmp_path / "again.db"
    done = _cli(
        "import", str(out), "--database-url", f"sqlite:///{again}", "--line-buffer-bytes", "1000"
    )
    assert done.returncode == 0, done.stderr
    back = _cli("export", "--database-url", f"sqlite:///{again}")
    assert back.stdout == out.read_text()


def test_bench_is_loaded_only_when_it_runs() -> None:
    """The CLI lists ``bench`` without importing :mod:`chathistory_bench`; the stand-in's help
    is the real command's, and ``bench`` itself resolves to the real command."""
    code = (
        "import sys\n"
        "from chathistory.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert not [m for m in sys.modules if m.startswith('chathistory_bench')]\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)

    import inspect

    import typer

    from chathistory.cli import app, bench_listed
    from chathistory_bench.command import bench_command

    assert inspect.getdoc(bench_listed) == inspect.getdoc(bench_command)
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    ctx = group.make_context("chathistory", ["bench", "--quick"], resilient_parsing=True)
    name, command, rest = group.resolve_command(ctx, ["bench", "--quick"])
    assert (name, rest) == ("bench", ["--quick"])
    assert command is not None
    assert "quick" in {p.name for p in command.params}  # the stand-in takes no options
