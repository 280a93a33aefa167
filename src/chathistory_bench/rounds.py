"""Timing in alternating rounds: the machine is shared and noisy, so contenders take turns.

Each contender is warmed up, then every round runs each contender's share of the operations
back to back, the order rotated by one each round (with library L and floor F: L F, F L, L F,
F L). A slow spell of the machine then lands on every contender alike. Latencies are pooled
over the rounds; throughput is operations over the time spent running that contender.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from chathistory_bench.report import Figure

# One operation: (writer, n), n counting that writer's operations from 0.
WriterOp = Callable[[int, int], Awaitable[object]]


@dataclass(frozen=True)
class Contender:
    label: str  # "library get_chat_history", "floor", ...
    op: WriterOp


@dataclass
class Samples:
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def figure(self, operation: str, contender: str, mode: str, note: str = "") -> Figure:
        values = self.latencies_ms
        return Figure(
            operation,
            contender,
            len(values),
            round(statistics.median(values), 3),
            round(percentile(values, 0.99), 3),
            round(len(values) / self.seconds, 1) if self.seconds else 0.0,
            mode,
            note,
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _drive(op: WriterOp, writers: int, per_writer: int, counters: list[int]) -> Samples:
    """``per_writer`` operations by each of ``writers`` concurrent writers."""
    latencies: list[float] = []

    async def writer(w: int) -> None:
        for _ in range(per_writer):
            n = counters[w]
            counters[w] += 1
            t0 = time.perf_counter()
            await op(w, n)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    if writers == 1:
        await writer(0)
    else:
        await asyncio.gather(*(writer(w) for w in range(writers)))
    return Samples(latencies, time.perf_counter() - start)


async def alternate(
    contenders: Sequence[Contender],
    *,
    runs: int,
    rounds: int,
    writers: int = 1,
    warmup: int = 8,
) -> list[Samples]:
    """About ``runs`` operations per contender (split over ``writers``), in ``rounds``
    alternating rounds; one ``Samples`` per contender, in the order given."""
    per_writer = max(1, math.ceil(runs / rounds / writers))
    counters = [[0] * writers for _ in contenders]
    for index, contender in enumerate(contenders):
        await _drive(contender.op, writers, max(1, math.ceil(warmup / writers)), counters[index])
    pooled = [Samples() for _ in contenders]
    order = list(range(len(contenders)))
    for round_number in range(rounds):
        shift = round_number % len(order)
        for index in order[shift:] + order[:shift]:
            taken = await _drive(contenders[index].op, writers, per_writer, counters[index])
            pooled[index].latencies_ms += taken.latencies_ms
            pooled[index].seconds += taken.seconds
    return pooled
