"""``chathistory bench``'s library-against-floor machinery on a tiny size (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
from rich.console import Console
from typer.testing import CliRunner

from chathistory import bench
from chathistory.cli import app
from chathistory.db import parse_database_url

TINY = bench.Sizes(
    reads=4,
    appends=16,
    rounds=2,
    history_sizes=(10, 120),
    conversations=60,
    deep_page=3,
    page_size=20,
)


async def test_every_library_figure_has_its_floor_and_ratio(
    postgres_store_url: str, tmp_path: Path
) -> None:
    lines: list[str] = []
    report = await bench.run(postgres_store_url, sizes=TINY, log=lines.append)

    assert report.setup["modes"] == ["unnamed", "cached"]
    library = [f for f in report.figures if f.contender.startswith("library")]
    floors = [f for f in report.figures if f.contender.startswith("floor")]
    # 5 operations x 1 library call, 2 reads x 2 library calls; the same again per mode.
    assert len(library) == 2 * (4 * 1 + 2 * 2)
    assert len(floors) == 2 * 6 * 2  # a direct connection and asyncpg's pool
    for kind, floor_name in (("floor", "floor: "), ("pool", "floor, asyncpg pool")):
        compared = {r.numerator: r for r in report.comparisons if r.kind == kind}
        for figure in library:
            ratio = compared[figure.name]
            floor = report.get(ratio.denominator)
            assert floor.contender.startswith(floor_name)
            assert (floor.operation, floor.mode) == (figure.operation, figure.mode)
            assert ratio.target == 1.3
            assert ratio.value == round(figure.p50_ms / floor.p50_ms, 2)
    for figure in library + floors:
        assert figure.runs >= TINY.rounds and figure.p50_ms > 0 and figure.per_second > 0
    assert {r.operation for r in report.comparisons if r.kind == "scale"} == {
        "read newest 50: 120 / 10 messages",
        "list: page 3 / page 1",
    }

    console = Console(record=True, width=200)
    for table in bench.render(report):
        console.print(table)
    text = console.export_text()
    assert "library p50 / floor p50" in text
    assert "through asyncpg's own pool" in text
    for ratio in report.comparisons:
        assert f"{ratio.value:.2f}" in text
    assert text.count("OVER") + text.count(" ok ") >= len(report.comparisons)

    bench.write_json(report, tmp_path / "bench.json")
    written = json.loads((tmp_path / "bench.json").read_text())
    assert len(written["comparisons"]) == len(report.comparisons)
    assert "WITH c AS (UPDATE conversations" in written["setup"]["floor_sql"]["append"]

    # Everything the run wrote is gone again.
    conn = await asyncpg.connect(parse_database_url(postgres_store_url).connect_args["dsn"])
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM conversations WHERE user_id LIKE 'bench-%'"
        )
    finally:
        await conn.close()
    assert left == 0


async def test_one_statement_mode_on_request(postgres_store_url: str) -> None:
    sizes = bench.Sizes(
        reads=2, appends=2, rounds=1, history_sizes=(5,), conversations=40, deep_page=2
    )
    report = await bench.run(
        postgres_store_url, sizes=sizes, prepared_statement_cache=True, log=lambda _: None
    )
    assert {f.mode for f in report.figures} == {"cached"}
    assert all(r.kind in ("floor", "pool") for r in report.comparisons if "read" in r.operation)


def test_cli_refuses_sizes_without_a_deep_page() -> None:
    result = CliRunner().invoke(app, ["bench", "--conversations", "10", "--no-load"])
    assert result.exit_code == 2
    assert "needs at least" in result.output
