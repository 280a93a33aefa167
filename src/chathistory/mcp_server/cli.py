"""The ``chathistory mcp`` command (registered by :mod:`chathistory.cli`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from chathistory.config import Settings
from chathistory.errors import ChatHistoryError


def mcp_command(
    user: Annotated[
        str,
        typer.Option(
            "--user", help="the user whose history the tools read and write", show_default=False
        ),
    ],
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL or SQLite path "
            r"\[env: CHATHISTORY_DATABASE_URL; default: ./chathistory.db]",
            show_default=False,
        ),
    ] = None,
    allow_delete: Annotated[
        bool,
        typer.Option(
            "--allow-delete",
            help=r"also offer the tools that delete \[env: CHATHISTORY_MCP_ALLOW_DELETE]",
        ),
    ] = False,
) -> None:
    """Serve MCP over stdio for USER: the chat history as tools for an MCP client (Claude
    Desktop, an IDE, an agent). Standard output carries the protocol; logs go to stderr."""
    from chathistory.mcp_server.stdio import serve_stdio  # the SDK only when serving

    settings = Settings()
    try:
        asyncio.run(
            serve_stdio(
                user,
                database_url=database_url or settings.database_url,
                allow_delete=allow_delete or settings.mcp_allow_delete,
                settings=settings,
            )
        )
    except ChatHistoryError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


__all__ = ["mcp_command"]
