"""The package's exceptions: one hierarchy under :class:`ChatHistoryError`.

They know nothing of HTTP; the HTTP face maps each class to a status code in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class ChatHistoryError(Exception):
    """Base class of every error this package raises on purpose."""


class NotFoundError(ChatHistoryError):
    """The row does not exist, or belongs to another user (the two are indistinguishable)."""


class ConversationNotFoundError(NotFoundError):
    def __init__(self, conversation_id: object) -> None:
        super().__init__(f"conversation {conversation_id} not found")
        self.conversation_id = conversation_id


class MessageNotFoundError(NotFoundError):
    def __init__(self, message_id: object) -> None:
        super().__init__(f"message {message_id} not found")
        self.message_id = message_id


class ItemNotFoundError(NotFoundError):
    def __init__(self, item_id: object) -> None:
        super().__init__(f"item {item_id} not found")
        self.item_id = item_id


class ConflictError(ChatHistoryError):
    """An id that is already stored was sent again with different content."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field: where it is (``loc``, as pydantic spells it), what is wrong, an error code."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class ValidationError(ChatHistoryError, ValueError):
    """Input breaks a rule of the data model; ``errors`` names each bad field."""

    def __init__(self, errors: Sequence[FieldError] | str, *, loc: tuple[str | int, ...] = ()):
        if isinstance(errors, str):
            errors = [FieldError(loc, errors)]
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(_describe(e) for e in self.errors) or "invalid input")


class InvalidCursorError(ValidationError):
    """A pagination cursor (or ``after`` / ``before`` id) that this list cannot continue from."""


class UnavailableError(ChatHistoryError):
    """The database cannot be reached, or no connection came free in time. Safe to retry.

    The message may quote the driver (which can name the database and the role); ``summary``
    says what happened without it, for whoever may not see those (an unauthenticated caller).
    """

    def __init__(self, message: str, *, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or "the database is unavailable"


class SchemaNotCurrentError(UnavailableError):
    """The database's schema is missing or behind this release: ``chathistory db upgrade``
    (or :func:`chathistory.migrations.upgrade`) brings it up to date."""


class ConfigurationError(ChatHistoryError):
    """The store was given settings it cannot work with (for example an unusable database URL)."""


class SearchDisabledError(ChatHistoryError):
    """Search is turned off for this store (``ChatHistory(..., search=False)``,
    ``CHATHISTORY_SEARCH=false``): its appends write no search rows, so a search could only
    answer wrong (missing) hits; it answers this instead (HTTP 409 ``search_disabled``)."""


def _describe(error: FieldError) -> str:
    where = ".".join(str(part) for part in error.loc)
    return f"{where}: {error.msg}" if where else error.msg
