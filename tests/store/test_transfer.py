"""Export -> import -> export gives the same file; bad lines are reported, the rest imports."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterator
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
    # An answer still streaming (SPEC 10): its status and last update travel with it.
    [streamed] = await store.add_messages(
        user, third.id, [{"role": "assistant", "content": "A ca", "status": "in_progress"}]
    )
    await store.update_message(user, third.id, streamed.id, {"append_text": "t"})


async def test_round_trip_is_identical(store: ChatHistory, user: str, fresh_url: str) -> None:
    await _populate(store, user)
    first = io.StringIO()
    report = await export_jsonl(store, first, user_ids=[user])
    assert (report.conversations, report.messages) == (3, 8)
    assert '"status":"in_progress"' in first.getvalue()
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
    async with ChatHistory.open(fresh_url) as target:
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
    store: ChatHistory, user: str, fresh_url: str
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
    async with ChatHistory.open(fresh_url) as target:
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


_CLI = [sys.executable, "-m", "chathistory.cli"]


def test_cli_export_import(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'cli-src.db'}"
    target = f"sqlite:///{tmp_path / 'cli-dst.db'}"
    cli = _CLI

    async def populate() -> None:
        async with ChatHistory.open(source) as store:
            await _populate(store, "alice")
            await _populate(store, "bob")

    asyncio.run(populate())
    out = tmp_path / "all.jsonl"
    done = subprocess.run(
        [*cli, "export", "--database-url", source, "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exported 6 conversations, 16 messages" in done.stderr
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
    assert "imported 6 conversations (16 messages), 0 already present, 1 failed" in first.stderr
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


# -- export on a live database: one snapshot ----------------------------------------------------


class _Writer:
    """A real concurrent writer: its own store (own engine and connections) on an event loop
    in another thread. ``append`` blocks until the messages are committed, so the export's
    progress callback can interleave writes with the export deterministically (no sleeps)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store: ChatHistory = self._run(self._open(url))
        self.appended: Counter[uuid.UUID] = Counter()

    async def _open(self, url: str) -> ChatHistory:
        return await ChatHistory.open(url, migrate=False)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def append(self, user_id: str, conversation_id: uuid.UUID) -> None:
        self._run(self.store.add_message(user_id, conversation_id, "user", "written meanwhile"))
        self.appended[conversation_id] += 1

    def close(self) -> None:
        self._run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def test_export_is_one_snapshot_under_concurrent_writes(
    store: ChatHistory, backend_url: str, user: str, other_user: str
) -> None:
    """Messages land on random conversations of the exported users all through the export: the
    file still holds every conversation that existed when it began, exactly once, each with
    exactly the messages it had then."""
    before: dict[uuid.UUID, tuple[str, int]] = {}
    for owner in (user, other_user):
        for n in range(150):  # more than one page of list_conversations
            record = _record(user_id=owner, updated_at=f"2026-01-01T00:{n // 60:02}:{n % 60:02}Z")
            count = 1 + n % 4
            record["messages"] = [
                {**record["messages"][0], "id": str(uuid.uuid4()), "seq": i + 1}
                for i in range(count)
            ]
            await store.import_conversation(record)
            before[uuid.UUID(record["id"])] = (owner, count)
    targets = list(before.items())
    rng = random.Random(9)
    writer = _Writer(backend_url)
    exported_messages = 0

    def progress(n: int) -> None:
        # Every third message exported, two random conversations get a message (and so move
        # to the front of their user's list), committed before the export reads on.
        nonlocal exported_messages
        exported_messages += n
        if exported_messages % 3 == 0:
            for conv_id, (owner, _count) in rng.sample(targets, 2):
                writer.append(owner, conv_id)

    out = io.StringIO()
    try:
        report = await export_jsonl(store, out, user_ids=[user, other_user], progress=progress)
    finally:
        writer.close()
    assert sum(writer.appended.values()) >= 2 * (exported_messages // 3) > 200
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    seen = Counter(uuid.UUID(line["id"]) for line in lines)
    missing = [conv_id for conv_id in before if seen[conv_id] == 0]
    twice = [conv_id for conv_id, times in seen.items() if times > 1]
    assert (len(missing), len(twice)) == (0, 0), f"{len(missing)} missing, {len(twice)} twice"
    assert set(seen) == set(before)
    for line in lines:
        owner, count = before[uuid.UUID(line["id"])]
        assert line["user_id"] == owner
        assert [m["seq"] for m in line["messages"]] == list(range(1, count + 1))
    assert (report.conversations, report.messages) == (
        len(before),
        sum(count for _owner, count in before.values()),
    )
    # The writes all landed, and the store writes on (no read-only connection left behind).
    for conv_id, (owner, count) in before.items():
        conv = await store.get_conversation(owner, conv_id)
        assert conv.message_count == count + writer.appended[conv_id]
    assert (await store.add_message(user, targets[0][0], "user", "after")).seq > 1


# -- import: bad lines and long lines ------------------------------------------------------------


def _record(**changes: Any) -> dict[str, Any]:
    stamp = "2026-01-01T00:00:00.000000+00:00"
    record: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "user_id": "importer",
        "title": None,
        "metadata": {},
        "created_at": stamp,
        "updated_at": stamp,
        "messages": [
            {
                "id": str(uuid.uuid4()),
                "seq": 1,
                "created_at": stamp,
                "role": "user",
                "content": "SECRET text of a user",
            }
        ],
    }
    for key, value in changes.items():
        if key.startswith("message_"):
            record["messages"][0][key.removeprefix("message_")] = value
        else:
            record[key] = value
    return record


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode() + b"\n"


def _hostile_lines() -> tuple[list[bytes], list[int]]:
    """Lines that used to kill a whole import, between good lines; the numbers of the bad."""
    secret = _line(_record()).replace(b"SECRET", b"SECRET \xff\xfe")
    deep = b"[" * 100_000 + b"]" * 100_000
    lines = [
        _line(_record()),
        secret,  # 2: invalid UTF-8
        b'{"title": ' + deep + b', "content": "SECRET"}\n',  # 3: nesting
        _line(_record()).replace(b'"messages": [', b'"messages": [' + deep + b", "),  # 4
        _line(_record()).replace(b'"seq": 1', b'"seq": ' + b"9" * 5000),  # 5: a huge int
        _line(_record(message_created_at="0000-01-01T00:00:00")),  # 6: year 0
        _line(_record(created_at="0001-01-01T00:00:00+05:00")),  # 7: year 0 in UTC
        _line(_record(message_created_at="0001-01-01T00:00:00+00:30")),  # 8
        _line(_record(updated_at="9999-12-31T23:00:00-05:00")),  # 9: year 10000 in UTC
        b"\n",
        _line(_record(message_created_at="0001-01-01T00:00:00-05:00")),  # 11: fine
        b"[1, 2]\n",  # 12
        b'{"id": 1} trailing\n',  # 13
        _line(_record()),
    ]
    return lines, [2, 3, 4, 5, 6, 7, 8, 9, 12, 13]


async def test_hostile_lines_are_reported_and_the_rest_imports(fresh_url: str) -> None:
    lines, bad = _hostile_lines()
    async with ChatHistory.open(fresh_url) as target:
        report = await import_jsonl(target, io.BytesIO(b"".join(lines)))
        assert [number for number, _ in report.errors] == bad, report.errors
        assert (report.created, report.messages) == (3, 3)
        assert all("SECRET" not in reason for _, reason in report.errors)
        reasons = dict(report.errors)
        assert "UTF-8" in reasons[2]
        assert "deep" in reasons[3] and "deep" in reasons[4]
        assert "digits" in reasons[5]
        assert all("range" in reasons[n] or "year" in reasons[n] for n in (6, 7, 8, 9))
        listed = await target.list_conversations("importer")
        assert len(listed.data) == 3


def test_cli_import_reports_hostile_lines(tmp_path: Path) -> None:
    lines, bad = _hostile_lines()
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(b"".join(lines))
    done = subprocess.run(
        [*_CLI, "import", str(source), "--database-url", f"sqlite:///{tmp_path / 'h.db'}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "SECRET" not in done.stderr
    assert [int(n) for n in re.findall(r"line (\d+):", done.stderr)] == bad
    assert "imported 3 conversations (3 messages), 0 already present, 10 failed" in done.stderr


class _CountingReader(io.BytesIO):
    """A binary stream that remembers the longest piece any one ``readline`` returned."""

    longest = 0

    def readline(self, size: int | None = -1) -> bytes:
        piece = super().readline(size)
        self.longest = max(self.longest, len(piece))
        return piece


async def _long_conversation(store: ChatHistory, user: str, messages: int) -> None:
    conv = await store.create_conversation(user, title="long")
    batch = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"{n} " + "é" * 200}
        for n in range(messages)
    ]
    await store.add_messages(user, conv.id, batch)


async def test_a_conversation_longer_than_the_line_buffer_round_trips(
    store: ChatHistory, user: str, fresh_url: str
) -> None:
    """Lines over ``line_buffer_bytes`` (each conversation here) are copied to a temporary file
    in pieces and parsed from there: the file imports whole, and again as already present."""
    await _populate(store, user)
    await _long_conversation(store, user, 400)
    first = io.BytesIO()
    with io.TextIOWrapper(first, encoding="utf-8", newline="", write_through=True) as out:
        await export_jsonl(store, out, user_ids=[user])
        data = first.getvalue()
    assert max(len(line) for line in data.splitlines()) > 80_000
    async with ChatHistory.open(fresh_url) as target:
        source = _CountingReader(data)
        report = await import_jsonl(target, source, line_buffer_bytes=4096)
        assert (report.created, report.messages, report.errors) == (4, 408, [])
        assert source.longest <= 4097  # never a longer piece of a line in memory at once
        again = await import_jsonl(target, _CountingReader(data), line_buffer_bytes=4096)
        assert (again.created, again.skipped, again.errors) == (0, 4, [])
        second = io.StringIO()
        await export_jsonl(target, second)
        assert second.getvalue().encode() == data


async def test_long_lines_report_what_short_ones_do(tmp_path: Path) -> None:
    """The same hostile lines, each read from a temporary file: the same lines fail, for the
    same reasons; a message over ``max_value_chars`` fails its line and the rest imports."""
    lines, bad = _hostile_lines()
    long = _record()
    long["messages"][0]["content"] = "x" * 100_000
    lines.append(_line(long))
    async with ChatHistory.open(f"sqlite:///{tmp_path / 'spooled.db'}") as target:
        short = await import_jsonl(target, io.BytesIO(b"".join(lines)))
    assert [number for number, _ in short.errors] == bad
    async with ChatHistory.open(f"sqlite:///{tmp_path / 'long.db'}") as target:
        report = await import_jsonl(
            target, io.BytesIO(b"".join(lines)), line_buffer_bytes=8, max_value_chars=50_000
        )
        assert [number for number, _ in report.errors] == [*bad, 15], report.errors
        assert (report.created, report.messages) == (3, 3)
        reasons = dict(report.errors)
        assert all("SECRET" not in reason for reason in reasons.values())
        for number in bad:
            assert (
                reasons[number].split(" at column")[0]
                == dict(short.errors)[number].split(" at column")[0]
            )
        assert "50,000 characters" in reasons[15]
        assert len((await target.list_conversations("importer")).data) == 3


async def test_a_large_line_imports_in_bounded_memory(tmp_path: Path) -> None:
    """One conversation of 10,000 messages on one line (4.5 MB) read into memory: the import's
    peak allocation stays under 2.5x the line (its bytes and its text; it was 4.5x, the parsed
    line), and every message is stored."""
    line = next(_bulk_lines("big", 1, 10_000)).replace("x" * 40, "y" * 340).encode()
    assert len(line) > 4_000_000
    async with ChatHistory.open(f"sqlite:///{tmp_path / 'big.db'}") as target:
        await import_jsonl(target, io.BytesIO(next(_bulk_lines("warm", 1, 3)).encode()))
        tracemalloc.start()
        try:
            report = await import_jsonl(target, io.BytesIO(line))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (report.created, report.messages, report.errors) == (1, 10_000, [])
        assert peak < 2.5 * len(line), f"peak {peak / len(line):.1f}x the line"
        conv = (await target.list_conversations("big")).data[0]
        assert conv.message_count == 10_000


async def test_a_line_over_the_buffer_imports_in_memory_that_does_not_grow(
    tmp_path: Path,
) -> None:
    """Lines over ``line_buffer_bytes`` stream: a conversation of 12,000 messages (6 MB on
    one line) peaks at the memory of one of 3,000 (one chunk of messages, whatever the line)."""
    peaks = {}
    async with ChatHistory.open(f"sqlite:///{tmp_path / 'streamed.db'}") as target:
        await import_jsonl(target, io.BytesIO(next(_bulk_lines("warm", 1, 3)).encode()))
        for count in (3_000, 12_000):
            line = next(_bulk_lines("big", 1, count)).replace("x" * 40, "y" * 340).encode()
            tracemalloc.start()
            try:
                report = await import_jsonl(target, io.BytesIO(line), line_buffer_bytes=65_536)
                _, peaks[count] = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert (report.created, report.messages, report.errors) == (1, count, [])
    assert len(line) > 5_000_000
    assert peaks[12_000] < 1.2 * peaks[3_000], peaks
    assert peaks[12_000] < 0.8 * len(line), f"peak {peaks[12_000] / len(line):.2f}x the line"
