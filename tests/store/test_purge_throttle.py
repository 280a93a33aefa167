"""The purge's throttle (SPEC 9; SPEC 6: a purge beside writers keeps their append p99): its
duty cycle, the pauses it asks for counted through an injected sleeper, on every backend; the
knob from the library, ``--duty`` and ``CHATHISTORY_PURGE_DUTY``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from chathistory import ChatHistory, PurgeReport, ValidationError, migrations
from chathistory.cli import app as cli_app
from chathistory.models import conversations
from chathistory.store import purging

C = conversations.c


async def _expired(store: ChatHistory, user: str, count: int) -> list[uuid.UUID]:
    """``count`` conversations of ``user``, one message each, expired a second ago."""
    ids = []
    for _ in range(count):
        conv = await store.create_conversation(user, expires_at=datetime.now(UTC) + timedelta(1))
        await store.add_message(user, conv.id, "user", "temporary")
        ids.append(conv.id)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(conversations)
            .where(C.user_id == user, C.id.in_(ids))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    return ids


class _Sleeper:
    """Counts the pauses the purge asks for, without pausing."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


async def _purge(store: ChatHistory, user: str, **options: Any) -> PurgeReport:
    return await purging.purge(
        store._db,
        older_than=None,
        user_id=user,
        dry_run=False,
        progress=None,
        **options,
    )


async def test_a_duty_below_one_pauses_after_each_batch(store: ChatHistory, user: str) -> None:
    await _expired(store, user, 5)
    sleeper = _Sleeper()
    report = await _purge(store, user, batch_size=2, duty=0.5, sleep=sleeper)
    assert report == PurgeReport(5, 5)
    # Batches of 2, 2 and 1, each followed by a pause; the empty batch that ends the purge
    # asks for none.
    assert len(sleeper.pauses) == 3
    assert all(pause >= 0 for pause in sleeper.pauses)


@pytest.mark.parametrize(("duty", "pause"), [(0.2, 4.0), (0.5, 1.0), (0.8, 0.25)])
async def test_a_pause_is_in_proportion_to_the_batch(
    store: ChatHistory, user: str, monkeypatch: pytest.MonkeyPatch, duty: float, pause: float
) -> None:
    """After a batch that took ``t``, a pause of ``t * (1 - duty) / duty`` (the clock made to
    say each batch took one second)."""
    ticks = iter(range(1000))
    monkeypatch.setattr(purging, "_clock", lambda: float(next(ticks)))
    await _expired(store, user, 2)
    sleeper = _Sleeper()
    await _purge(store, user, batch_size=1, duty=duty, sleep=sleeper)
    assert sleeper.pauses == pytest.approx([pause, pause])


async def test_progress_comes_before_the_pause(store: ChatHistory, user: str) -> None:
    """Each batch is reported as soon as it commits; its pause follows, holding nothing."""
    await _expired(store, user, 2)
    events: list[str] = []

    async def pause(_seconds: float) -> None:
        events.append("pause")

    report = await purging.purge(
        store._db,
        older_than=None,
        user_id=user,
        dry_run=False,
        batch_size=1,
        progress=lambda count: events.append(f"deleted {count}"),
        sleep=pause,
    )
    assert report == PurgeReport(2, 2)
    assert events == ["deleted 1", "pause", "deleted 1", "pause"]


async def test_a_duty_of_one_never_pauses(store: ChatHistory, user: str) -> None:
    await _expired(store, user, 3)
    sleeper = _Sleeper()
    assert await _purge(store, user, batch_size=1, duty=1, sleep=sleeper) == PurgeReport(3, 3)
    assert sleeper.pauses == []


async def test_a_dry_run_never_pauses(store: ChatHistory, user: str) -> None:
    await _expired(store, user, 2)
    sleeper = _Sleeper()
    report = await purging.purge(
        store._db,
        older_than=None,
        user_id=user,
        dry_run=True,
        batch_size=1,
        progress=None,
        duty=0.1,
        sleep=sleeper,
    )
    assert report == PurgeReport(2, 2, dry_run=True)
    assert sleeper.pauses == []


@pytest.mark.parametrize("duty", [0, -0.5, 1.5, True, "half", float("nan")])
async def test_a_bad_duty_is_refused(store: ChatHistory, user: str, duty: object) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.purge(user_id=user, duty=duty)  # type: ignore[arg-type]
    assert caught.value.errors[0].loc == ("duty",)


async def test_the_library_purge_takes_the_duty(store: ChatHistory, user: str) -> None:
    await _expired(store, user, 2)
    assert await store.purge(user_id=user, batch_size=1, duty=0.9) == PurgeReport(2, 2)


def test_cli_purge_takes_the_duty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--duty`` first, then ``CHATHISTORY_PURGE_DUTY``, then the library's default."""
    url = f"sqlite:///{tmp_path / 'duty.db'}"
    asyncio.run(migrations.upgrade(url))
    duties: list[float] = []

    async def recorded(self: ChatHistory, **options: Any) -> PurgeReport:
        duties.append(options["duty"])
        return PurgeReport(0, 0)

    monkeypatch.setattr(ChatHistory, "purge", recorded)
    monkeypatch.delenv("CHATHISTORY_PURGE_DUTY", raising=False)
    runner = CliRunner()
    command = ["purge", "--database-url", url]
    assert runner.invoke(cli_app, command).exit_code == 0
    monkeypatch.setenv("CHATHISTORY_PURGE_DUTY", "0.25")
    assert runner.invoke(cli_app, command).exit_code == 0
    assert runner.invoke(cli_app, [*command, "--duty", "0.75"]).exit_code == 0
    assert duties == [purging.DEFAULT_DUTY, 0.25, 0.75]
    for bad in ("0", "1.5", "-1"):
        refused = runner.invoke(cli_app, [*command, "--duty", bad])
        assert refused.exit_code == 2, refused.output
    monkeypatch.setenv("CHATHISTORY_PURGE_DUTY", "2")
    wrong = runner.invoke(cli_app, command)
    assert wrong.exit_code == 1 and "PURGE_DUTY" in wrong.output.upper()
    assert len(duties) == 3
