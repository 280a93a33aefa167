"""The records of export files (JSON Lines, one conversation per line) as import reads them:
a conversation with its lifecycle flags, and its messages with their ids, seq and times."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from chathistory.content_parts import field_error
from chathistory.schemas.base import (
    MAX_TITLE,
    MAX_USER_ID,
    Input,
    Metadata,
    Storable,
    Text,
    check_metadata,
)
from chathistory.schemas.lifecycle import Switch
from chathistory.schemas.messages import MessageCreate


class MessageRecord(MessageCreate):
    """A message as export files carry it: OpenAI format plus its id, seq and timestamp."""

    id: uuid.UUID
    seq: int = Field(ge=1)
    created_at: datetime
    updated_at: datetime | None = None  # a streamed message's last update (SPEC 10)

    @field_validator("created_at", "updated_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else aware_utc_timestamp(value)


class ConversationRecord(Input):
    """One line of an export file: a conversation with all of its messages."""

    id: uuid.UUID
    user_id: Annotated[str, Storable] = Field(min_length=1, max_length=MAX_USER_ID)
    title: Text | None = Field(default=None, max_length=MAX_TITLE)
    metadata: Metadata = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    archived: Switch = False  # the lifecycle (SPEC 9), in a file only when set
    pinned: Switch = False
    expires_at: datetime | None = None
    current_message_id: uuid.UUID | None = None  # the active branch's last message (SPEC 11)
    messages: list[MessageRecord] = Field(default_factory=list)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: Metadata) -> Metadata:
        return check_metadata(value)

    @field_validator("created_at", "updated_at", "expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else aware_utc_timestamp(value)

    @model_validator(mode="after")
    def _sequence(self) -> ConversationRecord:
        for index, message in enumerate(self.messages):
            if message.seq != index + 1:
                raise field_error(
                    "messages", f"seq must run 1, 2, 3, ...; item {index} has {message.seq}"
                )
        return self


def aware_utc_timestamp(value: datetime) -> datetime:
    """A timestamp of an export file: it needs a time zone, and must fall in years 1 to 9999
    once in UTC (where it is stored), so 0001-01-01T00:00:00+05:00 is out of range."""
    if value.tzinfo is None:
        raise ValueError("needs a time zone")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range: it must fall in years 1 to 9999 in UTC") from None
    return value
