"""The ``chathistory`` command: thin calls into the library."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from chathistory import migrations
from chathistory.config import Settings
from chathistory.db import parse_database_url
from chathistory.errors import ChatHistoryError

app = typer.Typer(
    help="Durable, multi-tenant chat history for AI assistants.", no_args_is_help=True
)
db_app = typer.Typer(help="Schema migrations (own version table: chathistory_alembic_version).")
app.add_typer(db_app, name="db")

console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL or SQLite path "
        "[env: CHATHISTORY_DATABASE_URL; default: ./chathistory.db]",
        show_default=False,
    ),
]


def _database_url(option: str | None) -> str:
    return option or Settings().database_url


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
