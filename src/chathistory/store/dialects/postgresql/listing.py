"""PostgreSQL's listing of a user's conversations: one keyset statement per filter on the pooled
asyncpg connection, beside the call that runs it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

from chathistory.pagination import ConversationCursor
from chathistory.schemas import ConversationRead
from chathistory.store.dialects.postgresql.params import FirstPage, PageAfter, takes
from chathistory.store.dialects.postgresql.records import CONVERSATION_COLUMNS, conversation_record

if TYPE_CHECKING:
    from chathistory.store.database import Database


def _listing(archived: bool | None, pinned: bool | None, after: bool) -> str:
    """A page of a user's conversations, most recently updated first, not expired at ``now``:
    the first one (:class:`.params.FirstPage`), and the one after a keyset position
    (:class:`.params.PageAfter`). The filters are constants of the statement, so each has its
    plan on its own index (models.py)."""
    flags = "".join(
        f" AND {name} = {'true' if value else 'false'}"
        for name, value in (("archived", archived), ("pinned", pinned))
        if value is not None
    )
    position = " AND (updated_at, id) < ($3, $4)" if after else ""
    return (
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations"  # noqa: S608
        f" WHERE user_id = $1{flags}{position} AND (expires_at IS NULL OR expires_at > $2)"
        f" ORDER BY updated_at DESC, id DESC LIMIT {'$5' if after else '$3'}"
    )


_FLAGS: Final = (None, True, False)
LIST_SQL: Final = {
    (archived, pinned, after): _listing(archived, pinned, after)
    for archived in _FLAGS
    for pinned in _FLAGS
    for after in (False, True)
}


takes(FirstPage, [text for (_, _, after), text in LIST_SQL.items() if not after])
takes(PageAfter, [text for (_, _, after), text in LIST_SQL.items() if after])


class Listing:
    """:meth:`list_conversations` of :class:`~.Postgres`."""

    _db: Database

    async def list_conversations(
        self,
        user_id: str,
        now: datetime,
        limit: int,
        position: ConversationCursor | None,
        *,
        archived: bool | None,
        pinned: bool | None,
    ) -> tuple[list[ConversationRead], bool]:
        """One statement of :data:`LIST_SQL`, for these filters."""
        async with self._db.driver() as driver:
            if position is None:
                statement = LIST_SQL[archived, pinned, False]
                first = FirstPage(user_id=user_id, now=now, limit=limit + 1)
                found = await driver.fetch(statement, *first)
            else:
                statement = LIST_SQL[archived, pinned, True]
                after = PageAfter(
                    user_id=user_id,
                    now=now,
                    updated_at=position.updated_at,
                    id=position.id,
                    limit=limit + 1,
                )
                found = await driver.fetch(statement, *after)
        return [conversation_record(row) for row in found[:limit]], len(found) > limit


__all__ = ["LIST_SQL", "Listing"]
