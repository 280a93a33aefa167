"""The seeds' promise as users live it: an open-loop scenario. Every one of ``users`` users takes
a turn about every ``turn_seconds`` (Poisson arrivals overall: ``users / turn_seconds``
requests a second), 80 % reading the newest 50 messages of their conversation, 20 % appending.

Open loop: requests are sent at their scheduled instants whatever the server's state, and each
latency is measured from the scheduled instant, so a stalled server shows as latency (no
coordinated omission). A user's keep-alive connection has long timed out by their next turn
(uvicorn keeps idle connections 5 s), so every turn connects anew, as a browser would.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from chathistory_bench.fixtures import CONTENT
from chathistory_bench.load import _Connection, take_turn
from chathistory_bench.report import Figure, Report
from chathistory_bench.rounds import percentile


@dataclass(frozen=True)
class OpenLoopPlan:
    users: int = 10_000  # one conversation each
    turn_seconds: float = 30.0
    seconds: float = 30.0
    read_share: float = 0.8
    messages_per_conversation: int = 20
    workers: int = 2
    give_up_seconds: float = 10.0  # a turn still unanswered by then counts as an error
    token_exp: int = 0  # the users' tokens' exp (the same token on every run); 0: in an hour

    @classmethod
    def quick(cls) -> OpenLoopPlan:
        return cls(users=2_000, turn_seconds=10.0, seconds=8.0)


async def open_loop_clients(
    base_url: str, secret: str, users: dict[str, list[str]], plan: OpenLoopPlan, seed: int = 11
) -> dict[str, Any]:
    """Send the scheduled turns; return latencies from the scheduled instants, and errors."""
    from urllib.parse import urlsplit

    import jwt

    target = urlsplit(base_url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    rng = random.Random(seed)
    names = sorted(users)
    rate = len(names) / plan.turn_seconds
    body = json.dumps({"role": "user", "content": CONTENT}).encode()
    tokens: dict[str, str] = {}
    latencies: dict[str, list[float]] = {"read newest 50": [], "append": []}
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    turns: list[tuple[float, str, bool]] = []
    at = 0.0
    while (at := at + rng.expovariate(rate)) < plan.seconds:
        turns.append((at, rng.choice(names), rng.random() < plan.read_share))
    start = loop.time() + 0.5

    async def turn(offset: float, user: str, reading: bool) -> None:
        scheduled = start + offset
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        token = tokens.get(user)
        if token is None:
            claims = {"sub": user, "exp": plan.token_exp or int(time.time()) + 3600}
            token = tokens[user] = jwt.encode(claims, secret, "HS256")
        path = f"/api/{user}/conversations/{users[user][0]}/messages"
        op = "read newest 50" if reading else "append"
        connection = _Connection(host, port)
        try:
            async with asyncio.timeout(plan.give_up_seconds):
                ok, key = await take_turn(connection, path, token, reading, body)
        except TimeoutError:
            ok, key = False, f"{op}: no answer in {plan.give_up_seconds:g} s"
        finally:
            if connection.writer is not None:
                connection.writer.close()
        if ok:
            latencies[op].append((loop.time() - scheduled) * 1000)
        else:
            errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(turn(*t) for t in turns))
    return {
        "scheduled": len(turns),
        "rate": round(rate, 1),
        "seconds": plan.seconds,
        "elapsed": round(loop.time() - start, 3),  # to the last answer (or give-up)
        "errors": errors,
        "samples": latencies,
    }


def report_open_loop(report: Report, plan: OpenLoopPlan, result: dict[str, Any]) -> None:
    note = (
        f"open loop: {plan.users:,} users, a turn each every ~{plan.turn_seconds:.0f} s "
        f"({result['rate']} requests/s, Poisson), {plan.workers} server workers"
    )
    everything: list[float] = []
    for op, values in result["samples"].items():
        everything += values
        report.add(
            Figure(
                f"open loop {op}",
                note,
                len(values),
                round(statistics.median(values), 3) if values else 0.0,
                round(percentile(values, 0.99), 3) if values else 0.0,
                round(len(values) / result["seconds"], 1),
            )
        )
    report.setup["open_loop"] = {**asdict(plan), "scheduled": result["scheduled"]}
    report.setup["open_loop_errors"] = result["errors"]
    report.ratios["open loop: errors (must be 0)"] = float(sum(result["errors"].values()))
    report.ratios["open loop: p99 ms (target < 500)"] = round(
        percentile(everything, 0.99) if everything else 0.0, 1
    )
    report.ratios["open loop: max ms"] = round(max(everything, default=0.0), 1)
