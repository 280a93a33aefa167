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


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="interface to listen on [env: CHATHISTORY_HOST; default: 127.0.0.1]"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port [env: CHATHISTORY_PORT; default: 8000]")
    ] = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[
        int | None,
        typer.Option(help="worker processes [env: CHATHISTORY_WORKERS; default: 1]", min=1),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="development only: serve WITHOUT authentication "
            "[env: CHATHISTORY_INSECURE_NO_AUTH]",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="log level of the server")] = "info",
) -> None:
    """Run the HTTP service (JWT auth from CHATHISTORY_JWT_SECRET or CHATHISTORY_JWT_JWKS_URL).

    The schema is migrated first, so a first run on the default SQLite file creates it.
    """
    import os

    import uvicorn

    from chathistory.http.auth import authenticator_from_settings

    # The app (in each worker process) reads its settings from the environment: put the
    # options there, so every worker sees the same configuration.
    overrides = {
        "CHATHISTORY_HOST": host,
        "CHATHISTORY_PORT": None if port is None else str(port),
        "CHATHISTORY_DATABASE_URL": database_url,
        "CHATHISTORY_WORKERS": None if workers is None else str(workers),
        "CHATHISTORY_INSECURE_NO_AUTH": "true" if insecure_no_auth else None,
    }
    os.environ.update({key: value for key, value in overrides.items() if value is not None})
    try:
        settings = Settings()
        authenticator_from_settings(settings)  # refuse to start without auth, before binding
        asyncio.run(migrations.upgrade(settings.database_url))
    except ChatHistoryError as exc:
        raise _fail(exc) from None
    log_config = dict(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"] = {
        **log_config["loggers"],
        "chathistory": {"handlers": ["default"], "level": log_level.upper(), "propagate": False},
    }
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
        log_config=log_config,
        access_log=False,  # the app logs each request with its request id
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
