"""Opening a store: what :meth:`ChatHistory.open <chathistory.store.facade.ChatHistory.open>`
returns, usable as ``async with`` or awaited."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from chathistory.db import create_engine

if TYPE_CHECKING:
    from chathistory.store.facade import ChatHistory


class Opening:
    """What :meth:`ChatHistory.open` returns: an async context manager, or an awaitable."""

    def __init__(
        self,
        cls: type[ChatHistory],
        database: str | AsyncEngine,
        migrate: bool,
        store_options: dict[str, Any],
        engine_options: dict[str, Any],
    ) -> None:
        self._args = (cls, database, migrate, store_options, engine_options)
        self._store: ChatHistory | None = None

    async def _open(self) -> ChatHistory:
        cls, database, migrate, store_options, engine_options = self._args
        owns = not isinstance(database, AsyncEngine)
        engine = (
            database
            if isinstance(database, AsyncEngine)
            else create_engine(database, **engine_options)
        )
        store = cls(engine, **store_options, owns_engine=owns)
        if migrate:
            from chathistory import migrations

            try:
                await migrations.upgrade(engine)
            except BaseException:
                await store.close()
                raise
        return store

    def __await__(self) -> Generator[Any, None, ChatHistory]:
        return self._open().__await__()

    async def __aenter__(self) -> ChatHistory:
        self._store = await self._open()
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()
