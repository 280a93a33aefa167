"""The conversation lifecycle's values (SPEC 9): an expiry instant, the list filters, a
duration as the command line writes it, and a purge's report. No database access here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, StrictBool
from pydantic.config import JsonDict

from chathistory.errors import ValidationError

Flag = Literal["true", "false", "any"]
"""A list filter on ``archived`` / ``pinned``: only ``true`` rows, only ``false`` rows, or both."""


def _future(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a time zone")
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range: it must fall in years 1 to 9999 in UTC") from None
    if value <= datetime.now(UTC):
        raise ValueError("must be a future instant (null clears it)")
    return value


FutureInstant = Annotated[datetime, AfterValidator(_future)]
"""An aware timestamp after now, kept in UTC."""


def optional_in_clients(schema: JsonDict) -> None:
    """No ``default`` in the document: typed clients (openapi-typescript) make a property
    with a default required, and these may be left out of a request."""
    schema.pop("default", None)


Switch = Annotated[
    StrictBool, Field(description="false when left out", json_schema_extra=optional_in_clients)
]
"""``archived`` / ``pinned`` of a create: JSON ``true`` or ``false``, false when left out."""


def flag(value: object, field: str) -> bool | None:
    """A list filter as ``True`` / ``False``, or ``None`` for ``any``; a
    :class:`ValidationError` naming ``field`` for anything else."""
    if isinstance(value, bool):
        return value
    if value is None or value == "any":
        return None
    if value in ("true", "false"):
        return value == "true"
    raise ValidationError("must be true, false or any", loc=(field,))


_DURATION: Final = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a :class:`timedelta` (a positive one);
    ``ValueError`` with a readable message otherwise."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m, 45s or 2w")
    amount = int(found[1])
    if amount < 1:
        raise ValueError(f"{text!r} must be longer than nothing")
    try:
        return timedelta(**{_UNITS[found[2]]: amount})
    except OverflowError:
        raise ValueError(f"{text!r} is too long") from None


@dataclass(frozen=True)
class PurgeReport:
    """What a purge deleted (or, dry, would delete)."""

    conversations: int = 0
    messages: int = 0
    dry_run: bool = False


__all__ = ["Flag", "FutureInstant", "PurgeReport", "Switch", "flag", "parse_duration"]
