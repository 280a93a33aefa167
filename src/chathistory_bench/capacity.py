"""Capacity: how many open-loop users the service holds, next to its bare-ASGI floor.

The open-loop scenario of :mod:`chathistory_bench.open_loop` (each user a turn about every
``turn_seconds``, 80 % reading the newest 50 of their conversation, 20 % appending, a new
connection per turn, latency from the scheduled instant), run at a rising user count: at each
step of ``CapacityPlan.steps`` the service (``chathistory serve``) and the floor
(:mod:`chathistory_bench.floor_app`) each take ``step_seconds`` of turns in turn, the order
alternating step by step, the load from a process of its own (``python -m chathistory_bench
open-loop``, the open-loop scenario's own client), after ``warmup_seconds`` of untimed turns
each at the first step. A target holds a step when its p99 is at
most ``p99_limit_ms`` and no turn failed; its ramp stops at the first step it does not hold,
the other target's ramp going on alone. Its capacity is the largest user count it held.

The figures go to ``Report.setup["capacity"]`` (every step of both targets, the largest user
counts, their ratio) and ``Report.ratios``; :func:`plot` draws p99 against users as a PNG and
:func:`table` renders the steps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chathistory.db import parse_database_url
from chathistory_bench.load import LoadPlan, _free_port, _load_fixtures, _ready, _serve
from chathistory_bench.open_loop import OpenLoopPlan
from chathistory_bench.report import Report
from chathistory_bench.rounds import percentile

Log = Callable[[str], None]
TARGETS = ("service", "floor")
LABELS = {"service": "chathistory serve", "floor": "floor: bare ASGI"}
CAPACITY_TARGET = 0.8  # issue 24: the service holds at least 0.8x the floor's users


@dataclass(frozen=True)
class CapacityPlan:
    """The ramp: user counts in rising order, each held ``step_seconds`` per target."""

    steps: tuple[int, ...] = (  # about x1.41 a step
        4_000,
        5_600,
        8_000,
        11_300,
        16_000,
        22_600,
        32_000,
        45_000,
        64_000,
    )
    step_seconds: float = 10.0
    warmup_seconds: float = 3.0  # untimed turns for each target at the first step, first
    turn_seconds: float = 30.0
    read_share: float = 0.8
    p99_limit_ms: float = 500.0
    messages_per_conversation: int = 20
    workers: int = 2  # server processes of each target: one per core of this 2-core machine
    give_up_seconds: float = 10.0  # a turn unanswered by then is an error
    token_exp: int = 0  # each user's token's exp, the same on every step (0: set by the run)

    @classmethod
    def quick(cls) -> CapacityPlan:
        return cls(steps=(2_000, 4_000, 8_000, 16_000, 32_000), step_seconds=4.0)

    def check(self) -> None:
        if not self.steps or any(n < 1 for n in self.steps):
            raise ValueError("the ramp needs at least one step of at least one user")
        if list(self.steps) != sorted(set(self.steps)):
            raise ValueError("the ramp's user counts must rise step by step")
        if min(self.step_seconds, self.turn_seconds, self.p99_limit_ms) <= 0 or (
            self.warmup_seconds < 0
        ):
            raise ValueError("a step, a turn and the p99 limit are each more than 0")

    def open_loop(self, users: int, seconds: float | None = None) -> OpenLoopPlan:
        """The open-loop scenario's plan for one step (``seconds``: of another length)."""
        return OpenLoopPlan(
            users=users,
            turn_seconds=self.turn_seconds,
            seconds=self.step_seconds if seconds is None else seconds,
            read_share=self.read_share,
            messages_per_conversation=self.messages_per_conversation,
            workers=self.workers,
            give_up_seconds=self.give_up_seconds,
            token_exp=self.token_exp,
        )


@dataclass(frozen=True)
class Step:
    """One target at one user count: latencies from the scheduled instants (reads and appends
    together), failed turns, and the rates scheduled and answered."""

    target: str
    users: int
    scheduled: int
    answered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    rate: float  # requests a second scheduled (users / turn_seconds)
    achieved: float  # answered turns a second, over the step until its last answer
    cpu_ms: float | None = None  # the target's server processes' CPU per answered turn
    load: float | None = None  # the host's 1-minute load average as the step ended

    def holds(self, p99_limit_ms: float) -> bool:
        """The stop rule: p99 within the limit and not one failed turn."""
        return self.errors == 0 and self.p99_ms <= p99_limit_ms


def step_from(
    target: str, users: int, result: dict[str, Any], cpu_seconds: float | None = None
) -> Step:
    """A step from the open-loop client's result (and the CPU its server spent meanwhile)."""
    everything = [v for values in result["samples"].values() for v in values]
    elapsed = result.get("elapsed") or result["seconds"]
    return Step(
        target=target,
        users=users,
        scheduled=result["scheduled"],
        answered=len(everything),
        p50_ms=round(statistics.median(everything), 3) if everything else 0.0,
        p99_ms=round(percentile(everything, 0.99), 3) if everything else 0.0,
        max_ms=round(max(everything, default=0.0), 3),
        errors=sum(result["errors"].values()),
        rate=result["rate"],
        achieved=round(len(everything) / elapsed, 1) if elapsed else 0.0,
        cpu_ms=round(cpu_seconds * 1000 / len(everything), 3)
        if cpu_seconds is not None and everything
        else None,
        load=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    )


def _tree_cpu(pid: int) -> float | None:
    """CPU seconds (user and system) of process ``pid`` and its children (a server and its
    workers), from ``/proc``; None where there is none."""
    proc = Path("/proc")
    if not (proc / str(pid)).exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if entry.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def largest_held(steps: Sequence[Step], p99_limit_ms: float) -> int:
    """The most users a target held: the last step before the first it did not hold (0 when
    it held none). ``steps`` are one target's, in ramp order."""
    held = 0
    for step in steps:
        if not step.holds(p99_limit_ms):
            break
        held = step.users
    return held


Measure = Callable[[str, int], Awaitable[Step]]


async def ramp(plan: CapacityPlan, measure: Measure, log: Log = print) -> list[Step]:
    """Step both targets up the ramp, alternating which goes first; a target leaves the ramp at
    the first step it does not hold. ``measure(target, users)`` runs one step."""
    active = list(TARGETS)
    steps: list[Step] = []
    for index, users in enumerate(plan.steps):
        order = active if index % 2 == 0 else active[::-1]
        for target in order:
            step = await measure(target, users)
            steps.append(step)
            verdict = "holds" if step.holds(plan.p99_limit_ms) else "does not hold"
            log(
                f"capacity: {target}, {users:,} users: p50 {step.p50_ms:.1f} ms, "
                f"p99 {step.p99_ms:.1f} ms, {step.errors} errors, "
                f"{step.achieved:,.0f}/{step.rate:,.0f} requests/s: {verdict}"
            )
        active = [
            t for t in active if all(s.holds(plan.p99_limit_ms) for s in steps if s.target == t)
        ]
        if not active:
            break
    return steps


def summary(plan: CapacityPlan, steps: Sequence[Step]) -> dict[str, Any]:
    """What ``Report.setup["capacity"]`` holds: the plan, every step, each target's largest
    user count held, whether its ramp found its limit, and the service / floor ratio."""
    largest: dict[str, int] = {}
    limited: dict[str, bool] = {}
    for target in TARGETS:
        mine = [s for s in steps if s.target == target]
        largest[target] = largest_held(mine, plan.p99_limit_ms)
        limited[target] = any(not s.holds(plan.p99_limit_ms) for s in mine)
    ratio = round(largest["service"] / largest["floor"], 2) if largest["floor"] else None
    return {
        "plan": asdict(plan),
        "cores": _cores(),
        "steps": [asdict(s) for s in steps],
        "max_users": largest,
        "limit_found": limited,  # False: held every step, the largest is a lower bound
        "ratio": ratio,
        "target": CAPACITY_TARGET,
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _steps(capacity: dict[str, Any], target: str) -> list[Step]:
    return [Step(**s) for s in capacity["steps"] if s["target"] == target]


def add_to_report(report: Report, capacity: dict[str, Any]) -> None:
    report.setup["capacity"] = capacity
    largest, limit = capacity["max_users"], capacity["plan"]["p99_limit_ms"]
    for target in TARGETS:
        bound = "" if capacity["limit_found"][target] else ", every step held"
        held = f"capacity: {target} max users (p99 <= {limit:g} ms, 0 errors{bound})"
        report.ratios[held] = float(largest[target])
    if capacity["ratio"] is not None:
        report.ratios[f"capacity: service / floor users (target >= {CAPACITY_TARGET})"] = capacity[
            "ratio"
        ]


@asynccontextmanager
async def _servers(
    url: str, dsn: str, secret: str, workers: int
) -> AsyncIterator[dict[str, tuple[str, int]]]:
    """``chathistory serve`` and the bare-ASGI floor, as the HTTP load scenario starts them
    (:func:`chathistory_bench.load.run_load`): their base URLs and process ids."""
    workdir = Path(tempfile.mkdtemp(prefix="chcap-"))
    env = {
        **os.environ,
        "CHATHISTORY_DATABASE_URL": url,
        "CHATHISTORY_JWT_SECRET": secret,
        "CHATHISTORY_POOL_SIZE": "10",
        "CHATHISTORY_MAX_OVERFLOW": "0",
        "CHATHISTORY_WORKERS": str(workers),
        "CHATHISTORY_FLOOR_DSN": dsn,
        "CHATHISTORY_FLOOR_SECRET": secret,
    }
    commands = {
        "service": ["-m", "chathistory.cli", "serve", "--log-level", "warning", "--port"],
        "floor": [
            *("-m", "uvicorn", "--factory", "chathistory_bench.floor_app:create_app"),
            *("--workers", str(workers), "--log-level", "warning", "--no-access-log", "--port"),
        ],
    }
    servers: list[Any] = []
    bases: dict[str, tuple[str, int]] = {}
    try:
        waits = []
        for name, command in commands.items():  # both start at once
            port = _free_port()
            server_log = workdir / f"{name}.log"
            servers.append(_serve([sys.executable, *command, str(port)], env, server_log))
            base = f"http://127.0.0.1:{port}"
            bases[name] = base, servers[-1].pid
            probe = "/readyz" if name == "service" else "/"
            waits.append(_ready(base, servers[-1], server_log, probe))
        await asyncio.gather(*waits)
        yield bases
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


async def _client(base: str, secret: str, users_file: Path, plan: OpenLoopPlan) -> dict[str, Any]:
    """One step's turns, from the open-loop scenario's client process."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "chathistory_bench", "open-loop", base, secret),
        *(str(users_file), json.dumps(asdict(plan))),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the open-loop clients failed:\n{err.decode()}")
    result: dict[str, Any] = json.loads(out)
    return result


async def run_capacity(url: str, plan: CapacityPlan, *, log: Log = print) -> Report:
    """Ramp the service and its floor at the PostgreSQL database at ``url`` (migrated), from
    ``plan``; users are written as the ramp needs them (one conversation each, by bulk SQL)
    and removed afterwards."""
    import secrets

    import asyncpg

    plan.check()
    if not plan.token_exp:  # a user keeps their token from step to step, as for an hour
        plan = dataclasses.replace(plan, token_exp=int(time.time()) + 3600)
    dsn = parse_database_url(url).connect_args["dsn"]
    prefix = f"cap-{uuid.uuid4().hex[:8]}"
    secret = secrets.token_urlsafe(32)
    raw = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert raw is not None
    workdir = Path(tempfile.mkdtemp(prefix="chcap-users-"))
    written: dict[str, list[str]] = {}
    try:
        async with _servers(url, dsn, secret, plan.workers) as bases:

            async def users_file(users: int) -> Path:
                """The first ``users`` users, written as the ramp first needs them."""
                if users > len(written):
                    more = users - len(written)
                    log(f"capacity: writing {more:,} more users with a conversation each")
                    group = LoadPlan(
                        users=more,
                        conversations=more,
                        messages_per_conversation=plan.messages_per_conversation,
                    )
                    written.update(await _load_fixtures(raw, f"{prefix}-{users}", group))
                path = workdir / f"users-{users}.json"
                if not path.exists():
                    path.write_text(json.dumps(dict(sorted(written.items())[:users])))
                return path

            async def measure(target: str, users: int) -> Step:
                chosen = await users_file(users)
                base, pid = bases[target]
                before = _tree_cpu(pid)
                result = await _client(base, secret, chosen, plan.open_loop(users))
                after = _tree_cpu(pid)
                spent = after - before if after is not None and before is not None else None
                return step_from(target, users, result, spent)

            if plan.warmup_seconds:  # pools filled, first requests' imports done: not timed
                first = await users_file(plan.steps[0])
                log("capacity: warming both up at the first step, untimed")
                warm = plan.open_loop(plan.steps[0], min(plan.warmup_seconds, plan.step_seconds))
                for target in TARGETS:
                    await _client(bases[target][0], secret, first, warm)
            steps = await ramp(plan, measure, log)
    finally:
        async with raw.acquire() as conn:
            await conn.execute("DELETE FROM conversations WHERE user_id LIKE $1 || '-%'", prefix)
        await raw.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = Report()
    add_to_report(report, summary(plan, steps))
    return report


def _title(capacity: dict[str, Any]) -> str:
    largest, found = capacity["max_users"], capacity["limit_found"]
    held = {
        t: f"{largest[t]:,}" + ("" if found[t] else "+") for t in TARGETS
    }  # "+": held every step
    ratio = capacity["ratio"]
    ratio_text = f"{ratio:.2f}x" if ratio is not None else "n/a"
    return (
        f"Open-loop capacity on {capacity['cores']} cores (p99 <= "
        f"{capacity['plan']['p99_limit_ms']:g} ms, 0 errors)\n"
        f"service holds {held['service']} users, floor {held['floor']}: "
        f"{ratio_text} (target >= {capacity['target']}x)"
    )


def plot(capacity: dict[str, Any], path: Path) -> Path:
    """Draw p99 against users for both targets, the limit marked, as a PNG at ``path``
    (matplotlib's Agg canvas: no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plan = capacity["plan"]
    limit = float(plan["p99_limit_ms"])
    figure = Figure(figsize=(9, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    styles = {"service": ("tab:blue", "o"), "floor": ("tab:orange", "s")}
    floor_ms = 0.1  # a log axis has no 0
    for target in TARGETS:
        steps = _steps(capacity, target)
        if not steps:
            continue
        colour, marker = styles[target]
        users = [s.users for s in steps]
        p99 = [max(s.p99_ms, floor_ms) for s in steps]
        held = largest_held(steps, limit)
        axes.plot(
            users, p99, color=colour, marker=marker, label=f"{LABELS[target]} (holds {held:,})"
        )
        for s in steps:
            if not s.holds(limit):
                note = f"{s.errors:,} errors" if s.errors else "over"
                axes.plot([s.users], [max(s.p99_ms, floor_ms)], "x", color="red", markersize=12)
                axes.annotate(
                    note,
                    (s.users, max(s.p99_ms, floor_ms)),
                    textcoords="offset points",
                    xytext=(6, 6),
                    color="red",
                    fontsize=8,
                )
    axes.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"p99 limit {limit:g} ms")
    axes.set_yscale("log")
    axes.set_xscale("log")
    axes.set_xlabel(f"users (a turn each every ~{plan['turn_seconds']:g} s, Poisson)")
    axes.set_ylabel("p99 latency from the scheduled instant, ms (log)")
    ticks = sorted({s["users"] for s in capacity["steps"]})
    if ticks:
        axes.set_xticks(ticks, [f"{t:,}" for t in ticks], rotation=45, fontsize=8)
        axes.minorticks_off()
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left")
    axes.set_title(_title(capacity), fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def table(capacity: dict[str, Any]) -> Any:
    """A rich table: per user count, each target's p50 / p99 (ms), failed turns, turns
    answered a second, server CPU per turn (ms) and verdict."""
    from rich.table import Table

    limit = float(capacity["plan"]["p99_limit_ms"])
    rendered = Table(title=_title(capacity).replace("\n", ": "), title_justify="left")
    rendered.add_column("users", justify="right")
    rendered.add_column("req/s", justify="right")
    for target in TARGETS:
        for column in ("p50", "p99", "err", "ans/s", "cpu", ""):
            rendered.add_column(
                f"{target} {column}" if column == "p50" else column, justify="right"
            )
    by_users: dict[int, dict[str, Step]] = {}
    for step in (Step(**s) for s in capacity["steps"]):
        by_users.setdefault(step.users, {})[step.target] = step
    for users in sorted(by_users):
        row = [f"{users:,}", f"{next(iter(by_users[users].values())).rate:,.0f}"]
        for target in TARGETS:
            s = by_users[users].get(target)
            row += (
                [
                    f"{s.p50_ms:.1f}",
                    f"{s.p99_ms:.1f}",
                    str(s.errors),
                    f"{s.achieved:,.0f}",
                    f"{s.cpu_ms:.2f}" if s.cpu_ms is not None else "",
                    "ok" if s.holds(limit) else "OVER",
                ]
                if s
                else ["", "", "", "", "", "-"]
            )
        rendered.add_row(*row)
    return rendered
