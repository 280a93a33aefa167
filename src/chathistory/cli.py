"""The ``chathistory`` command: thin calls into the library."""

from __future__ import annotations

import asyncio
import html
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from chathistory import migrations
from chathistory.config import Settings, settings_help
from chathistory.db import parse_database_url
from chathistory.errors import ChatHistoryError
from chathistory.mcp_server.cli import mcp_command
from chathistory.schemas.lifecycle import parse_duration

if TYPE_CHECKING:
    # The Click types typer builds its commands from (recent typer vendors its own Click).
    from typer._click import Command, Context

    from chathistory.store.opening import Opening


class _Commands(typer.core.TyperGroup):
    """The CLI's commands, with ``bench`` loaded from its own package only when it runs.

    The benchmarks live in :mod:`chathistory_bench`, a sibling package in the same
    distribution (docs/architecture.md): ``chathistory --help`` lists the stand-in below and
    imports none of it; ``chathistory bench ...`` (``--help`` included) swaps in the real
    command from :mod:`chathistory_bench.command`."""

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name == "bench":
            command = _bench_command()
        return name, command, rest


def _bench_command() -> Command:
    """``chathistory bench``'s command, built from :mod:`chathistory_bench.command`."""
    from chathistory_bench.command import bench_command

    bench = typer.Typer(add_completion=False)
    bench.command("bench")(bench_command)
    return typer.main.get_command(bench)


app = typer.Typer(
    cls=_Commands,
    help="Durable, multi-tenant chat history for AI assistants.",
    no_args_is_help=True,
)
db_app = typer.Typer(
    help="Schema migrations (own version table: chathistory_alembic_version) and Citus."
)
app.add_typer(db_app, name="db")
app.command("mcp")(mcp_command)


@app.command("bench")
def bench_listed() -> None:
    """Measure the store against real PostgreSQL, next to its floors (raw asyncpg, one
    statement, same statement handling) in alternating rounds, and the HTTP service under
    concurrent load. Compare the ratios: absolute figures move with the machine."""
    # The stand-in _Commands lists; its help is the real command's (tests/cli/test_cli.py).
    raise AssertionError("chathistory bench runs chathistory_bench.command")  # pragma: no cover


console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL or SQLite path "
        "\\[env: CHATHISTORY_DATABASE_URL; default: ./chathistory.db]",
        show_default=False,
    ),
]


def _settings() -> Settings:
    """The ``CHATHISTORY_*`` settings, as the service reads them; a bad one is an error that
    names it (exit 1), not a traceback."""
    import pydantic

    try:
        return Settings()
    except pydantic.ValidationError as exc:
        from rich.markup import escape

        for error in exc.errors():
            name = "CHATHISTORY_" + "_".join(map(str, error["loc"])).upper()
            console.print(f"[red]error:[/red] {name}: {escape(error['msg'])}", highlight=False)
        raise typer.Exit(1) from None


def _database_url(option: str | None) -> str:
    return option or _settings().database_url


def _open_store(database_url: str | None, *, migrate: bool) -> Opening:
    """The store opened as the service opens it: the URL (``--database-url`` first), the
    store's limits and the engine's options, all from the same ``CHATHISTORY_*`` settings."""
    from chathistory.store import ChatHistory

    settings = _settings()
    url = database_url or settings.database_url
    return ChatHistory.open(url, migrate=migrate, **settings.open_options())


def _fail(exc: ChatHistoryError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(
    database_url: DatabaseUrl = None,
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Migrate the database schema up to REVISION (default: the newest)."""
    url = _database_url(database_url)
    try:
        asyncio.run(migrations.upgrade(url, revision))
        now = asyncio.run(migrations.current(url))
    except ChatHistoryError as exc:
        raise _fail(exc) from None
    console.print(f"{parse_database_url(url).render()} is at revision [bold]{now}[/bold]")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="target revision ('base': drop every table)")],
    database_url: DatabaseUrl = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    allow_data_loss: Annotated[
        bool, typer.Option("--allow-data-loss", help="downgrade even if it loses data")
    ] = False,
) -> None:
    """Migrate the database schema down to REVISION: says what it would lose first (branches
    flattened, statuses, lifecycle, message extras), refuses to lose anything unless
    --allow-data-loss, and asks for confirmation unless --yes. Stop writers first."""
    from chathistory.migrations import downgrading

    url = _database_url(database_url)
    shown = parse_database_url(url).render()
    try:
        plan = asyncio.run(downgrading.plan_downgrade(url, revision))
        if not plan.undone:
            console.print(f"{shown} is at revision [bold]{plan.current}[/bold]: nothing to do")
            return
        console.print(f"{shown}: undoing {', '.join(plan.undone)}")
        for loss in plan.losses:
            console.print(f"  [yellow]would lose:[/yellow] {loss.detail}", highlight=False)
        if not plan.losses:
            console.print("  nothing would be lost (derived data is rebuilt by an upgrade)")
        elif not allow_data_loss:
            console.print(
                "[red]error:[/red] refusing to lose data: nothing changed "
                "(--allow-data-loss downgrades anyway)"
            )
            raise typer.Exit(1)
        if not yes:
            typer.confirm(f"Downgrade to {plan.target or 'base'}?", abort=True)
        asyncio.run(downgrading.downgrade(url, revision, allow_data_loss=allow_data_loss))
        now = asyncio.run(migrations.current(url))
    except ChatHistoryError as exc:
        raise _fail(exc) from None
    console.print(f"{shown} is at revision [bold]{now or '(none)'}[/bold]")


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema revision the database is at (and whether it is the newest)."""
    url = _database_url(database_url)
    try:
        now = asyncio.run(migrations.current(url))
    except ChatHistoryError as exc:
        raise _fail(exc) from None
    head = migrations.head()
    state = "up to date" if now == head else f"newest is {head}"
    typer.echo(f"{now or '(none)'} ({state})")


@db_app.command("distribute")
def db_distribute(database_url: DatabaseUrl = None) -> None:
    """Distribute the store's tables by user_id on a Citus coordinator (colocated; a second run
    changes nothing). Run `db upgrade` first."""
    from chathistory.migrations import citus

    url = _database_url(database_url)
    try:
        tables = asyncio.run(citus.distribute(url))
    except ChatHistoryError as exc:
        raise _fail(exc) from None
    for table in tables:
        state = "distributed now" if table.created else "already distributed"
        console.print(f"{table.table}: {state} by user_id, {table.shards} shards")
    if not any(table.created for table in tables):
        console.print("nothing changed")


@app.command(
    epilog="Every setting, as an environment variable:\n\n" + settings_help().replace("\n", "\n\n")
)
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="interface to listen on \\[env: CHATHISTORY_HOST; default: 127.0.0.1]"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port \\[env: CHATHISTORY_PORT; default: 8000]")
    ] = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[
        int | None,
        typer.Option(help="worker processes \\[env: CHATHISTORY_WORKERS; default: 1]", min=1),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="development only: serve WITHOUT authentication "
            "\\[env: CHATHISTORY_INSECURE_NO_AUTH]",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="log level of the server")] = "info",
) -> None:
    """Run the HTTP service (JWT auth from CHATHISTORY_JWT_SECRET or CHATHISTORY_JWT_JWKS_URL).

    The schema is migrated first, so a first run on the default SQLite file creates it.
    """
    import uvicorn

    from chathistory.http.server import uvicorn_options

    settings = _serve_settings(
        {
            "CHATHISTORY_HOST": host,
            "CHATHISTORY_PORT": None if port is None else str(port),
            "CHATHISTORY_DATABASE_URL": database_url,
            "CHATHISTORY_WORKERS": None if workers is None else str(workers),
            "CHATHISTORY_INSECURE_NO_AUTH": "true" if insecure_no_auth else None,
        }
    )
    console.print(
        f"serving {parse_database_url(settings.database_url).render()} "
        f"on http://{settings.host}:{settings.port}"
    )
    uvicorn.run(
        "chathistory.http.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=log_level,
        log_config=_uvicorn_log_config(log_level),
        access_log=False,  # the app logs each request with its request id
        **uvicorn_options(settings.max_header_bytes),  # 431 for a request head over the limit
    )


def _serve_settings(overrides: dict[str, str | None]) -> Settings:
    """The settings ``serve`` runs with, the options given (``overrides``, ``None`` for one not
    given) put into the environment first: the app in each worker process reads its settings
    from there, so every worker sees the same configuration. Refuses to go on without
    authentication, and migrates the schema when ``migrate_on_start``, before binding."""
    import os

    from chathistory.http.auth import authenticator_from_settings

    os.environ.update({key: value for key, value in overrides.items() if value is not None})
    try:
        settings = Settings()
        authenticator_from_settings(settings)  # refuse to start without auth, before binding
        if settings.migrate_on_start:
            asyncio.run(migrations.upgrade(settings.database_url))
    except ChatHistoryError as exc:
        raise _fail(exc) from None
    return settings


def _uvicorn_log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, with the chathistory logger through its ``default``
    handler at ``log_level``."""
    import uvicorn

    log_config = dict(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"] = {
        **log_config["loggers"],
        "chathistory": {"handlers": ["default"], "level": log_level.upper(), "propagate": False},
    }
    return log_config


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="the user id: the token's `sub`")],
    hours: Annotated[float, typer.Option(help="lifetime in hours")] = 1.0,
) -> None:
    """Print an HS256 token for USER signed with CHATHISTORY_JWT_SECRET (for development and
    scripts; production tokens come from your identity provider)."""
    import time

    import jwt

    settings = Settings()
    if settings.jwt_secret is None:
        console.print("[red]error:[/red] set CHATHISTORY_JWT_SECRET first")
        raise typer.Exit(1)
    claims: dict[str, Any] = {"sub": user, "iat": int(time.time())}
    claims["exp"] = claims["iat"] + int(hours * 3600)
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    typer.echo(jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256"))


@app.command("export")
def export_command(
    output: Annotated[
        str, typer.Option("--output", "-o", help="file to write, '-' for standard output")
    ] = "-",
    user: Annotated[
        list[str] | None, typer.Option("--user", help="export only this user (repeatable)")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export conversations as JSON Lines (one conversation per line, OpenAI format)."""
    from chathistory.transfer import export_jsonl

    async def run() -> int:
        async with _open_store(database_url, migrate=False) as store:
            with _open_output(output) as out, _progress("exporting", "messages") as advance:
                report = await export_jsonl(store, out, user_ids=user, progress=advance)
        console.print(
            f"exported {report.conversations:,} conversations, {report.messages:,} messages"
        )
        return 0

    try:
        raise typer.Exit(asyncio.run(run()))
    except ChatHistoryError as exc:
        raise _fail(exc) from None


def _duration(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _duty(value: float | None) -> float | None:
    if value is not None and not 0 < value <= 1:
        raise typer.BadParameter("must be above 0 and at most 1")
    return value


@app.command("purge")
def purge_command(
    older_than: Annotated[
        timedelta | None,
        typer.Option(
            "--older-than",
            parser=_duration,
            metavar="DURATION",
            help="also delete conversations not updated for this long (30d, 12h, 90m, 2w), "
            "except pinned ones",
        ),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="purge only this user")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be deleted; delete nothing")
    ] = False,
    duty: Annotated[
        float | None,
        typer.Option(
            "--duty",
            callback=_duty,
            help="fraction of its time the purge works, pausing after each batch in proportion "
            "(0.5: as long as the batch took; 1: no pause); env CHATHISTORY_PURGE_DUTY, "
            f"default {Settings.model_fields['purge_duty'].default}",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete expired conversations (and, with --older-than, old unpinned ones) in short
    batches, pausing between them to leave the writers their share; safe to run from several
    processes at once."""
    working = _settings().purge_duty if duty is None else duty

    async def run() -> int:
        async with _open_store(database_url, migrate=False) as store:
            what = "counting" if dry_run else "purging"
            with _progress(what, "conversations") as advance:
                report = await store.purge(
                    older_than=older_than,
                    user_id=user,
                    dry_run=dry_run,
                    progress=advance,
                    duty=working,
                )
        verb = "would delete" if dry_run else "deleted"
        console.print(
            f"{verb} {report.conversations:,} conversations, {report.messages:,} messages"
        )
        return 0

    try:
        raise typer.Exit(asyncio.run(run()))
    except ChatHistoryError as exc:
        raise _fail(exc) from None


@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help='words; "a phrase"; -excluded; a OR b')],
    user: Annotated[str, typer.Option("--user", help="the user whose messages to search")],
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="only this conversation (its id)")
    ] = None,
    role: Annotated[str | None, typer.Option(help="only messages of this role")] = None,
    limit: Annotated[int, typer.Option(help="hits per page (1-100)")] = 20,
    cursor: Annotated[str | None, typer.Option(help="continue after a previous page")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one hit per line, then the page's end")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Search one user's messages, newest first (a table on a terminal; --json for scripts)."""
    import json
    import uuid

    try:
        conversation_id = uuid.UUID(conversation) if conversation else None
    except ValueError:
        console.print(f"[red]error:[/red] --conversation is not a conversation id: {conversation}")
        raise typer.Exit(2) from None

    async def run() -> Any:
        async with _open_store(database_url, migrate=False) as store:
            return await store.search_messages(
                user,
                query,
                conversation_id=conversation_id,
                role=role,
                limit=limit,
                cursor=cursor,
            )

    try:
        page = asyncio.run(run())
    except ChatHistoryError as exc:
        raise _fail(exc) from None
    if as_json:
        for hit in page.data:
            typer.echo(hit.model_dump_json())
        end = {"object": "list.end", "has_more": page.has_more, "next_cursor": page.next_cursor}
        typer.echo(json.dumps(end))
        return
    _print_hits(page)


def _print_hits(page: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table("when", "conversation", "role", "snippet", expand=True)
    for hit in page.data:
        snippet = html.unescape(
            escape(hit.snippet).replace("<mark>", "[bold yellow]").replace("</mark>", "[/]")
        )
        table.add_row(
            hit.message.created_at.strftime("%Y-%m-%d %H:%M"),
            escape(hit.conversation.title or str(hit.conversation.id)),
            hit.message.role,
            snippet,
        )
    Console().print(table)
    if page.has_more:
        console.print(f"more: --cursor {page.next_cursor}")


@app.command("import")
def import_command(
    source: Annotated[str, typer.Argument(help="JSON Lines file, '-' for standard input")],
    user: Annotated[
        str | None, typer.Option("--user", help="import only this user's conversations")
    ] = None,
    line_buffer_bytes: Annotated[
        int | None,
        typer.Option(
            "--line-buffer-bytes",
            min=1,
            help="a longer line (a long conversation) is copied to a temporary file and read "
            "from there a message at a time, never whole in memory [default: 8 MiB]",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Import JSON Lines written by `chathistory export`. Each line is stored whole or not at
    all; bad lines are reported with their number and the rest imports. Importing the same file
    again creates nothing. Exits 1 when any line failed."""
    from rich.markup import escape

    from chathistory.transfer import import_jsonl

    given = {} if line_buffer_bytes is None else {"line_buffer_bytes": line_buffer_bytes}

    async def run(total: int | None) -> int:
        async with _open_store(database_url, migrate=True) as store:
            with _open_input(source) as lines, _progress("importing", "bytes", total=total) as tick:
                report = await import_jsonl(store, lines, user_id=user, progress=tick, **given)
        for number, message in report.errors:
            console.print(f"[red]line {number}:[/red] {escape(message)}", highlight=False)
        console.print(
            f"imported {report.created:,} conversations ({report.messages:,} messages), "
            f"{report.skipped:,} already present, {len(report.errors):,} failed"
        )
        return 1 if report.errors else 0

    try:
        total = None if source == "-" else Path(source).stat().st_size
        raise typer.Exit(asyncio.run(run(total)))
    except OSError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except ChatHistoryError as exc:
        raise _fail(exc) from None


@contextmanager
def _open_output(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


@contextmanager
def _open_input(path: str) -> Iterator[IO[bytes]]:
    """Bytes: the importer decodes each line itself (a line that is not UTF-8 is one bad line)."""
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as handle:
        yield handle


@contextmanager
def _progress(
    what: str, unit: str, *, total: int | None = None
) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal (standard error); nothing when it is not one."""
    if not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    columns += [BarColumn(), MofNCompleteColumn()] if total else [TextColumn("{task.completed:,}")]
    with Progress(*columns, TextColumn(unit), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
