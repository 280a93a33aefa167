"""What a bench run found: its figures, the ratios between them, tables and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Statement handling: each library figure is compared with the floor run the same way.
MODES: dict[str, str] = {
    "unnamed": "default: unnamed statements (library create_engine(url); "
    "floor asyncpg statement_cache_size=0)",
    "cached": "prepared_statement_cache=True (floor: asyncpg's default statement cache)",
}
FLOOR_TARGET = 1.3  # section 6: library p50 at most 1.3x its floor's
SCALE_TARGET = 1.3  # section 6: the newest 50 of 100,000 and page 1,000 cost what 100 / page 1 do
PURGE_TARGET = 1.3  # section 9: other users' appends keep their latency while a purge runs
PURGE_P99_TARGET = 1.5  # section 6 (v3): their append p99 within 1.5x of no purge


@dataclass
class Figure:
    """One timed operation by one contender: latencies in milliseconds and throughput."""

    operation: str
    contender: str
    runs: int
    p50_ms: float
    p99_ms: float
    per_second: float
    mode: str = ""
    note: str = ""

    @property
    def name(self) -> str:
        mode = f" [{self.mode}]" if self.mode else ""
        return f"{self.operation}: {self.contender}{mode}"


@dataclass
class Ratio:
    """``numerator`` p50 / ``denominator`` p50 (figure names), against a target (p99 / p99
    for the kind "purge p99")."""

    kind: str  # "floor" / "pool": library / a floor; "scale": large / small, same contender
    operation: str
    contender: str  # the numerator's
    mode: str
    numerator: str
    denominator: str
    value: float
    target: float

    @property
    def within(self) -> bool:
        return self.value <= self.target


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    comparisons: list[Ratio] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)  # free-form (the HTTP scenario)
    setup: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def merge(self, other: Report) -> None:
        """Take another scenario's figures, ratios and set-up into this report."""
        self.figures += other.figures
        self.comparisons += other.comparisons
        self.ratios.update(other.ratios)
        self.setup.update(other.setup)

    def get(self, name: str) -> Figure:
        return next(f for f in self.figures if f.name == name)

    def compare(
        self, kind: str, operation: str, numerator: Figure, denominator: Figure, target: float
    ) -> Ratio:
        ratio = Ratio(
            kind,
            operation,
            numerator.contender,
            numerator.mode,
            numerator.name,
            denominator.name,
            round(numerator.p50_ms / denominator.p50_ms, 2),
            target,
        )
        self.comparisons.append(ratio)
        return ratio

    def modes(self) -> list[str]:
        """The statement modes measured: those of the run, then any other a figure has (the
        search and purge scenarios' default mode, in a run of the cached mode only)."""
        listed: list[str] = self.setup.get("modes", [])
        return [*listed, *sorted({f.mode for f in self.figures} - {*listed, ""})]

    def as_dict(self) -> dict[str, Any]:
        return {
            "setup": self.setup,
            "modes": {mode: MODES[mode] for mode in self.modes()},
            "figures": [{**asdict(f), "name": f.name} for f in self.figures],
            "comparisons": [{**asdict(r), "within": r.within} for r in self.comparisons],
            "ratios": self.ratios,
        }


def render(report: Report) -> list[Any]:
    """Rich tables: the figures of each statement mode, the ratios to the floors, the scale
    ratios, then the HTTP scenario's."""
    from rich.table import Table

    tables: list[Any] = []
    for mode in [*report.modes(), ""]:
        figures = [f for f in report.figures if f.mode == mode]
        if not figures:
            continue
        title = f"statements: {MODES[mode]}" if mode else "HTTP service under load"
        table = Table(title=title, title_justify="left")
        for column in ("operation", "contender", "runs", "p50 ms", "p99 ms", "ops/s"):
            table.add_column(
                column, justify="left" if column in ("operation", "contender") else "right"
            )
        for f in figures:
            table.add_row(
                f.operation,
                f.contender,
                str(f.runs),
                f"{f.p50_ms:.3f}",
                f"{f.p99_ms:.3f}",
                f"{f.per_second:,.0f}",
            )
        tables.append(table)
    for kind, title in (
        ("floor", f"library p50 / floor p50 (section 6 target: at most {FLOOR_TARGET})"),
        (
            "pool",
            "library p50 / the floor through asyncpg's own pool (a connection borrowed per "
            f"operation, as a service does; target: at most {FLOOR_TARGET})",
        ),
        ("scale", f"large / small p50, same contender (target: at most {SCALE_TARGET})"),
        (
            "branched",
            "a branched conversation p50 / one of the same size that never branched "
            f"(target: at most {SCALE_TARGET})",
        ),
        ("search", "search p50 / reading the newest 50, same user (target: at most 10)"),
        (
            "purge",
            "other users' append p50 while a purge runs / with no purge, interleaved "
            f"(target: at most {PURGE_TARGET})",
        ),
        ("purge p99", f"the same, p99 / p99 (target: at most {PURGE_P99_TARGET})"),
    ):
        rows = [r for r in report.comparisons if r.kind == kind]
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for column in ("operation", "library call", "statements", "ratio", "target", ""):
            table.add_column(column, justify="right" if column in ("ratio", "target") else "left")
        for r in rows:
            table.add_row(
                r.operation,
                r.contender.removeprefix("library "),
                r.mode,
                f"{r.value:.2f}",
                f"{r.target:.1f}",
                "ok" if r.within else "OVER",
            )
        tables.append(table)
    if report.ratios:
        table = Table(title="HTTP scenario", title_justify="left")
        table.add_column("ratio")
        table.add_column("value", justify="right")
        for name, value in report.ratios.items():
            table.add_row(name, f"{value:.2f}")
        tables.append(table)
    return tables


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
