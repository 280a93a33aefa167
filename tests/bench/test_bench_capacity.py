"""The capacity ramp: its stop rule on recorded steps, and a tiny ramp of ``chathistory bench
--capacity`` against real PostgreSQL with its JSON and PNG (machinery only, never a latency)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console
from typer.testing import CliRunner

from chathistory.cli import app
from chathistory.db import parse_database_url
from chathistory_bench.capacity import (
    CapacityPlan,
    Step,
    largest_held,
    plot,
    ramp,
    summary,
    table,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _step(target: str, users: int, p99_ms: float, errors: int = 0) -> Step:
    return Step(target, users, 10, 10 - errors, p99_ms / 2, p99_ms, p99_ms, errors, 1.0, 1.0)


def test_a_target_holds_up_to_its_first_step_over_the_limit_or_with_errors() -> None:
    steps = [_step("service", 1, 20.0), _step("service", 2, 499.0), _step("service", 4, 501.0)]
    assert largest_held(steps, 500.0) == 2
    assert largest_held(steps, 600.0) == 4
    # An error fails a step whatever its latency, and nothing after a failed step counts.
    failed = [_step("floor", 1, 5.0), _step("floor", 2, 5.0, errors=1), _step("floor", 4, 5.0)]
    assert largest_held(failed, 500.0) == 1
    assert largest_held([_step("floor", 1, 900.0)], 500.0) == 0
    assert largest_held([], 500.0) == 0
    assert _step("floor", 1, 500.0).holds(500.0)  # the limit itself holds


async def test_the_ramp_stops_each_target_at_its_first_failed_step() -> None:
    # The service goes over at 4 users, the floor errs at 8: each leaves the ramp there, the
    # other going on alone; the order alternates step by step.
    verdicts = {("service", 4): (900.0, 0), ("floor", 8): (10.0, 3)}
    asked: list[tuple[str, int]] = []

    async def measure(target: str, users: int) -> Step:
        asked.append((target, users))
        p99, errors = verdicts.get((target, users), (10.0, 0))
        return _step(target, users, p99, errors)

    plan = CapacityPlan(steps=(1, 2, 4, 8, 16))
    steps = await ramp(plan, measure, log=lambda _: None)
    assert asked == [
        ("service", 1),
        ("floor", 1),
        ("floor", 2),
        ("service", 2),
        ("service", 4),
        ("floor", 4),
        ("floor", 8),  # the floor alone from here, and not past its errors
    ]
    found = summary(plan, steps)
    assert found["max_users"] == {"service": 2, "floor": 4}
    assert found["limit_found"] == {"service": True, "floor": True}
    assert found["ratio"] == 0.5

    # A ramp both targets hold to its end: the largest step is a lower bound, said so.
    held = await ramp(plan, lambda t, n: _held(t, n), log=lambda _: None)
    assert len(held) == 2 * len(plan.steps)
    everything = summary(plan, held)
    assert everything["max_users"] == {"service": 16, "floor": 16}
    assert everything["limit_found"] == {"service": False, "floor": False}


async def _held(target: str, users: int) -> Step:
    return _step(target, users, 1.0)


def test_a_ramp_plan_rises() -> None:
    CapacityPlan().check()
    CapacityPlan.quick().check()
    for steps in ((), (2, 1), (1, 1), (0, 1)):
        with pytest.raises(ValueError, match="step"):
            CapacityPlan(steps=steps).check()
    with pytest.raises(ValueError, match="more than 0"):
        CapacityPlan(step_seconds=0).check()


def test_the_plot_is_a_png_of_both_targets(tmp_path: Path) -> None:
    plan = CapacityPlan(steps=(10, 20, 40))
    steps = [
        _step("service", 10, 12.0),
        _step("floor", 10, 8.0),
        _step("floor", 20, 30.0),
        _step("service", 20, 700.0),
        _step("floor", 40, 0.0, errors=2),  # no answer at all: drawn at the axis' bottom
    ]
    found = summary(plan, steps)
    written = plot(found, tmp_path / "deeper" / "capacity.png")
    data = written.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000  # axes, two curves, a legend and a title, not an empty canvas
    console = Console(record=True, width=200)
    console.print(table(found))
    text = console.export_text()
    assert "service holds 10 users, floor 20: 0.50x" in text
    assert "OVER" in text


def test_cli_capacity_ramp_writes_both_targets_json_and_plot(
    postgres_store_url: str, tmp_path: Path
) -> None:
    """A tiny ramp on real servers (3 then 6 users, a turn each every 0.2 s, 1 s a step); a p99
    limit no latency reaches keeps both targets on the ramp to its end (no timed assertion)."""
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--database-url",
            postgres_store_url,
            *("--no-floors", "--no-search", "--no-purge", "--no-branches", "--no-load"),
            "--no-storage",
            "--capacity",
            *("--capacity-users", "3,6", "--capacity-seconds", "1"),
            *("--capacity-turn-seconds", "0.2", "--capacity-p99-ms", "1e9"),
            *("--json", str(tmp_path / "bench.json")),
        ],
    )
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "bench.json").read_text())
    capacity = written["setup"]["capacity"]
    assert [(s["target"], s["users"]) for s in capacity["steps"]] == [
        ("service", 3),
        ("floor", 3),
        ("floor", 6),
        ("service", 6),
    ]
    for step in capacity["steps"]:
        assert step["scheduled"] > 0 and step["answered"] + step["errors"] == step["scheduled"]
        assert step["p99_ms"] >= step["p50_ms"] > 0
    assert capacity["plan"]["steps"] == [3, 6] and capacity["plan"]["token_exp"] > 0
    held = capacity["max_users"]
    assert set(held) == {"service", "floor"}
    for target in ("service", "floor"):
        mine = [Step(**s) for s in capacity["steps"] if s["target"] == target]
        assert held[target] == largest_held(mine, 1e9) == 6  # no errors on either
        key = next(k for k in written["ratios"] if k.startswith(f"capacity: {target} max users"))
        assert written["ratios"][key] == held[target]
    # The default plot goes beside the JSON, and the JSON says where.
    png = tmp_path / "bench-capacity.png"
    assert capacity["plot"] == str(png)
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert "service holds" in result.output

    async def left() -> int:
        dsn = parse_database_url(postgres_store_url).connect_args["dsn"]
        conn = await asyncpg.connect(dsn)
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM conversations WHERE user_id LIKE 'cap-%'"
            )
        finally:
            await conn.close()
        return count

    import asyncio

    assert asyncio.run(left()) == 0  # the ramp's users are gone again


def test_cli_refuses_a_ramp_that_does_not_rise() -> None:
    result = CliRunner().invoke(
        app, ["bench", "--no-floors", "--capacity", "--capacity-users", "8,4"]
    )
    assert result.exit_code == 2
    assert "must rise" in result.output
