"""Export -> import -> export gives the same file; bad lines are reported, the rest imports."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chathistory import ChatHistory
from chathistory.transfer import export_jsonl, import_jsonl


def call(id: str) -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}


async def _populate(store: ChatHistory, user: str) -> None:
    first = await store.create_conversation(user, title="weather", metadata={"k": "v"})
    await store.add_messages(
        user,
        first.id,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Paris? 🇫🇷 漢字", "name": "ann", "metadata": {"m": "1"}},
            {"role": "assistant", "content": None, "tool_calls": [call("a"), call("b")]},
            {"role": "tool", "tool_call_id": "a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "18C"}]},
            {"role": "assistant", "content": "Sunny, 18°C."},
        ],
    )
    await store.create_conversation(user)  # an empty one
    third = await store.create_conversation(user)
    await store.add_message(
        user, third.id, "user", [{"type": "image_url", "image_url": {"url": "data:,x"}}]
    )


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(
    request: pytest.FixtureRequest, tmp_path: Path, make_pg_database: Callable[[str], str]
) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'import.db'}"
    return make_pg_database("chathistory_import_tests")


async def test_round_trip_is_identical(store: ChatHistory, user: str, empty_url: str) -> None:
    await _populate(store, user)
    first = io.StringIO()
    report = await export_jsonl(store, first, user_ids=[user])
    assert (report.conversations, report.messages) == (3, 7)
    lines = first.getvalue().splitlines()
    assert len(lines) == 3
    weather = next(json.loads(line) for line in lines if '"weather"' in line)
    assert weather["messages"][2] == {
        "id": weather["messages"][2]["id"],
        "seq": 3,
        "created_at": weather["messages"][2]["created_at"],
        "role": "assistant",
        "content": None,
        "tool_calls": [call("a"), call("b")],
    }
    async with ChatHistory.open(empty_url) as target:
        imported = await import_jsonl(target, first.getvalue().splitlines(keepends=True))
        assert (imported.created, imported.skipped, imported.errors) == (3, 0, [])
        second = io.StringIO()
        await export_jsonl(target, second)
        assert second.getvalue() == first.getvalue()
        again = await import_jsonl(target, io.StringIO(first.getvalue()))
        assert (again.created, again.skipped, again.errors) == (0, 3, [])
        third = io.StringIO()
        await export_jsonl(target, third)
        assert third.getvalue() == first.getvalue()
        # The imported conversation carries on like any other.
        conv = uuid.UUID(weather["id"])
        added = await target.add_message(user, conv, "user", "thanks")
        assert added.seq == 7


async def test_bad_lines_are_reported_and_the_rest_imports(
    store: ChatHistory, user: str, empty_url: str
) -> None:
    await _populate(store, user)
    out = io.StringIO()
    await export_jsonl(store, out, user_ids=[user])
    good = out.getvalue().splitlines()
    broken_tool = json.loads(good[0])
    broken_tool["id"] = str(uuid.uuid4())
    for message in broken_tool["messages"]:
        message["id"] = str(uuid.uuid4())
    broken_tool["messages"].append(
        {
            "id": str(uuid.uuid4()),
            "seq": len(broken_tool["messages"]) + 1,
            "created_at": broken_tool["created_at"],
            "role": "tool",
            "tool_call_id": "nobody-called",
            "content": "x",
        }
    )
    lines = [
        good[0],
        "{not json",
        "",
        json.dumps({"id": "nope"}),
        json.dumps(broken_tool),
        '{"id": "' + str(uuid.uuid4()) + '", "user_id": "u", "created_at": NaN}',
        "[1, 2]",
        *good[1:],
    ]
    async with ChatHistory.open(empty_url) as target:
        report = await import_jsonl(target, lines)
        assert report.created == 3
        assert [number for number, _ in report.errors] == [2, 4, 5, 6, 7]
        assert "tool_call_id" in report.errors[2][1]
        assert len((await target.list_conversations(user)).data) == 3
        # Nothing of the rejected conversation was half-written.
        with pytest.raises(Exception, match="not found"):
            await target.get_conversation(user, uuid.UUID(broken_tool["id"]))


def _bulk_lines(user: str, conversations: int, per_conversation: int) -> Iterator[str]:
    created = "2026-01-01T00:00:00.000000+00:00"
    for c in range(conversations):
        yield (
            json.dumps(
                {
                    "id": str(uuid.uuid4()),
                    "user_id": user,
                    "title": f"bulk {c}",
                    "metadata": {},
                    "created_at": created,
                    "updated_at": created,
                    "messages": [
                        {
                            "id": str(uuid.uuid4()),
                            "seq": n + 1,
                            "created_at": created,
                            "role": "user" if n % 2 == 0 else "assistant",
                            "content": f"message {n} " + "x" * 40,
                        }
                        for n in range(per_conversation)
                    ],
                }
            )
            + "\n"
        )


_MEASURE = """
import asyncio, sys
from chathistory import ChatHistory
from chathistory.transfer import export_jsonl, import_jsonl

async def main(direction, url, path):
    async with ChatHistory.open(url) as store:
        if direction == "import":
            with open(path) as lines:
                report = await import_jsonl(store, lines)
            assert not report.errors, report.errors[:3]
            print(report.messages)
        else:
            with open(path, "w") as out:
                print((await export_jsonl(store, out)).messages)

asyncio.run(main(*sys.argv[1:]))
"""


def _peak_rss(direction: str, url: str, path: Path) -> tuple[int, int]:
    """Run one import or export in a child process: (messages, its peak RSS in KiB)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _MEASURE, direction, url, str(path)], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0
    return int(output.strip()), usage.ru_maxrss


def test_memory_stays_flat_both_ways(tmp_path: Path) -> None:
    """Import and export of 200,000 messages peak at about the memory of 20,000: it streams."""
    peaks = {}
    for conversations in (10, 100):
        source = tmp_path / f"in-{conversations}.jsonl"
        with source.open("w") as handle:
            handle.writelines(_bulk_lines("bulk", conversations, 2000))
        url = f"sqlite:///{tmp_path / f'bulk-{conversations}.db'}"
        imported, import_peak = _peak_rss("import", url, source)
        exported, export_peak = _peak_rss("export", url, tmp_path / f"out-{conversations}.jsonl")
        assert imported == exported == conversations * 2000
        peaks[conversations] = (import_peak, export_peak)
    small, large = peaks[10], peaks[100]
    size_mib = (tmp_path / "in-100.jsonl").stat().st_size / 1024 / 1024
    assert size_mib > 14
    for direction, low, high in (("import", small[0], large[0]), ("export", small[1], large[1])):
        grew = (high - low) / 1024
        assert grew < 16, (
            f"{direction}: peak RSS grew {grew:.1f} MiB for {size_mib:.0f} MiB of data"
        )


def test_cli_export_import(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'cli-src.db'}"
    target = f"sqlite:///{tmp_path / 'cli-dst.db'}"
    cli = [sys.executable, "-m", "chathistory.cli"]

    async def populate() -> None:
        async with ChatHistory.open(source) as store:
            await _populate(store, "alice")
            await _populate(store, "bob")

    import asyncio

    asyncio.run(populate())
    out = tmp_path / "all.jsonl"
    done = subprocess.run(
        [*cli, "export", "--database-url", source, "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exported 6 conversations, 14 messages" in done.stderr
    assert "\x1b[" not in done.stderr  # no progress bar when not on a terminal
    only_bob = subprocess.run(
        [*cli, "export", "--database-url", source, "--user", "bob"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {json.loads(line)["user_id"] for line in only_bob.stdout.splitlines()} == {"bob"}

    broken = tmp_path / "broken.jsonl"
    broken.write_text(out.read_text() + "{oops\n")
    first = subprocess.run(
        [*cli, "import", str(broken), "--database-url", target], capture_output=True, text=True
    )
    assert first.returncode == 1
    assert "line 7:" in first.stderr
    assert "imported 6 conversations (14 messages), 0 already present, 1 failed" in first.stderr
    again = subprocess.run(
        [*cli, "import", str(out), "--database-url", target],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "imported 0 conversations (0 messages), 6 already present, 0 failed" in again.stderr
    back = subprocess.run(
        [*cli, "export", "--database-url", target], capture_output=True, text=True, check=True
    )
    assert back.stdout == out.read_text()
    missing = subprocess.run(
        [*cli, "import", str(tmp_path / "nope.jsonl"), "--database-url", target],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
