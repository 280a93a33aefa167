"""``chathistory bench``'s library-against-floor machinery on a tiny size (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console
from typer.testing import CliRunner

import chathistory_bench as bench
from chathistory.cli import app
from chathistory.db import parse_database_url
from chathistory_bench.branches import shape

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
    # 2 appends, 2 list pages, and per history size a read and a page; the same per mode.
    assert len(library) == 2 * (4 * 1 + 2 * 2)
    assert len(floors) == 2 * 8 * 2  # a direct connection and asyncpg's pool, reads and pages
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


def test_purge_sizes_need_a_phase_per_writer_count() -> None:
    bench.PurgeSizes().check()
    bench.PurgeSizes.quick().check()
    with pytest.raises(ValueError, match="fewer purge batches"):
        bench.PurgeSizes(conversations=600, victims=1, phase_batches=2).check()


@pytest.mark.parametrize(("stale", "purges"), [(False, 2), (True, 1)])
async def test_purge_scenario_times_appends_with_and_without_the_purge(
    postgres_store_url: str, stale: bool, purges: int
) -> None:
    # 2 victims of 200 conversations: one batch each, a "purge running" phase per writer count.
    sizes = bench.PurgeSizes(
        conversations=400, victims=2, messages=2, phase_batches=1, stale=stale, purges=purges
    )
    lines: list[str] = []
    report = await bench.run_purge(postgres_store_url, sizes, log=lines.append)

    what = "old" if stale else "expired"
    operations = ("append, 1 writer, other users", "append, 8 writers (1 conv. each), other users")
    for operation in operations:
        for contender in ("purge running", "no purge"):
            figure = report.get(f"{operation}: library add_message, {contender} [unnamed]")
            assert figure.runs >= 1 and figure.p50_ms > 0
        for kind in ("purge", "purge p99"):
            (ratio,) = [
                r
                for r in report.comparisons
                if r.kind == kind and r.operation.startswith(f"{operation}:")
            ]
            assert ratio.target == (1.5 if kind == "purge p99" else 1.3)  # SPEC 6: p99 1.5
            assert ratio.numerator.endswith("purge running [unnamed]")
            assert ratio.denominator.endswith("no purge [unnamed]")
            field = "p99_ms" if kind == "purge p99" else "p50_ms"
            during, baseline = report.get(ratio.numerator), report.get(ratio.denominator)
            assert ratio.value == round(getattr(during, field) / getattr(baseline, field), 2)
    (purged,) = [f for f in report.figures if f.operation.startswith("purge ")]
    assert f"purge 400 {what} conversations" in purged.operation
    assert purged.runs == 2 * purges and purged.per_second > 0
    assert report.setup["purge"]["conversations"] == 400 * purges
    assert report.setup["purge"]["messages"] == 800 * purges

    console = Console(record=True, width=200)
    for table in bench.render(report):
        console.print(table)
    text = console.export_text()
    assert "while a purge runs / with no purge" in text
    assert "library purge, batches of 500" in text

    # The victims went with the purge, the appenders' users with the clean-up.
    conn = await asyncpg.connect(parse_database_url(postgres_store_url).connect_args["dsn"])
    try:
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM conversations WHERE user_id LIKE 'bench-%')"
            " + (SELECT count(*) FROM message_search WHERE user_id LIKE 'bench-%')"
        )
    finally:
        await conn.close()
    assert left == 0


def test_branch_shape_is_the_same_at_every_size() -> None:
    sizes = bench.BranchSizes()
    crossed = set()
    for count in (*sizes.sizes, *bench.BranchSizes.quick().sizes):
        tree, tip = shape(count, sizes)
        path = tree.path(tip)
        newest = tree.branch(tip)[-sizes.limit :]
        assert tree.count == count and tip < count  # the active branch ends before the end
        assert [seq for lo, hi in path for seq in range(lo, hi + 1)] == tree.branch(tip)
        crossed.add(sum(1 for lo, hi in path if hi >= newest[0]))
        # Each message follows an earlier one, a question an answer and an answer a question.
        assert all(tree.parents[s] < s for s in range(1, count + 1))
        assert all(tree.role(s) != tree.role(tree.parents[s]) for s in range(2, count + 1))
    assert crossed == {sizes.visits}
    tree, tip = shape(100_000, sizes)
    assert len(tree.path(tip)) > 900  # a range for every regenerated answer before it


async def test_branches_scenario_checks_its_fixture_and_times_both_sizes(
    postgres_store_url: str,
) -> None:
    sizes = bench.BranchSizes(sizes=(80, 400), regenerate_every=10, reads=4, switches=2, rounds=2)
    lines: list[str] = []
    report = await bench.run_branches(postgres_store_url, sizes, log=lines.append)

    for count, ranges in (("80", 10), ("400", 24)):
        checked = report.setup["branches"][count]
        assert checked["checked"] == {"newest": 50, "all": int(count), "switch_path": True}
        assert checked["active_path_ranges"] == ranges and checked["runs_in_newest"] == 9
    operations = {
        "branched: read newest 50": (
            "library get_chat_history",
            "library list_messages desc",
        ),
        "branched: regenerate an answer": ("library add_messages parent_id",),
        "branched: switch back": ("library update_conversation current_message_id",),
    }
    scale = [r for r in report.comparisons if r.kind == "scale"]
    against = [r for r in report.comparisons if r.kind == "branched"]
    assert len(report.figures) == 8 + 12 and len(scale) == 4 and len(against) == 6
    for label in ("read newest", "newest as a page", "append"):  # branched / never branched
        for count in (80, 400):
            (ratio,) = [r for r in against if r.operation.startswith(f"{label}, {count} ")]
            assert ratio.numerator.endswith(f"library {label}, branched [unnamed]")
            assert ratio.denominator.endswith(f"library {label}, never branched [unnamed]")
            assert ratio.target == 1.3
    for operation, contenders in operations.items():
        for contender in contenders:
            small = report.get(f"{operation}, 80 messages: {contender} [unnamed]")
            large = report.get(f"{operation}, 400 messages: {contender} [unnamed]")
            assert min(small.runs, large.runs) >= sizes.rounds and small.p50_ms > 0
            (ratio,) = [r for r in scale if r.numerator == large.name]
            assert ratio.operation == f"{operation}: 400 / 80"
            assert ratio.denominator == small.name and ratio.target == 1.3
            assert ratio.value == round(large.p50_ms / small.p50_ms, 2)

    console = Console(record=True, width=200)
    for table in bench.render(report):
        console.print(table)
    printed = console.export_text()
    assert "branched: switch back: 400 / 80" in printed
    assert "append, 400 messages: branched / never branched" in printed

    conn = await asyncpg.connect(parse_database_url(postgres_store_url).connect_args["dsn"])
    try:
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM conversations WHERE user_id LIKE 'bench-%')"
            " + (SELECT count(*) FROM message_search WHERE user_id LIKE 'bench-%')"
        )
    finally:
        await conn.close()
    assert left == 0


def test_cli_bench_has_the_branches_scenario() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0 and "--no-branches" in result.output
    assert "--no-floors" in result.output  # each scenario can run alone
