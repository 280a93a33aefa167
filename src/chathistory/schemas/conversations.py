"""Conversations: what a create and an update take, what a read gives back, and the title a
conversation takes from its first message."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, StrictBool, field_validator

from chathistory.schemas.base import (
    MAX_TITLE,
    READ,
    TITLE_FROM_MESSAGE_CHARS,
    Input,
    Metadata,
    Text,
    check_metadata,
)
from chathistory.schemas.lifecycle import FutureInstant, Switch


class ConversationCreate(Input):
    id: uuid.UUID | None = None
    title: Text | None = Field(default=None, max_length=MAX_TITLE)
    metadata: Metadata = Field(default_factory=dict)
    archived: Switch = False
    pinned: Switch = False
    expires_at: FutureInstant | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: Metadata) -> Metadata:
        return check_metadata(value)


class ConversationUpdate(Input):
    """Fields to change; a field left out stays as it is. ``metadata`` replaces the whole object."""

    title: Text | None = Field(default=None, max_length=MAX_TITLE)
    metadata: Metadata | None = None
    archived: StrictBool | None = None
    pinned: StrictBool | None = None
    expires_at: FutureInstant | None = None
    current_message_id: uuid.UUID | None = Field(
        default=None, description="switch the active branch to the one ending at this message"
    )

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: Metadata | None) -> Metadata | None:
        return None if value is None else check_metadata(value)


class ConversationRead(BaseModel):
    model_config = READ

    object: Literal["conversation"] = "conversation"
    id: uuid.UUID
    user_id: str
    title: str | None
    metadata: Metadata
    created_at: datetime
    updated_at: datetime
    message_count: int
    archived: bool
    pinned: bool
    expires_at: datetime | None
    current_message_id: uuid.UUID | None = Field(
        description="the last message of the active branch (section 11)"
    )


def title_from(text: str) -> str | None:
    collapsed = " ".join(text.split())
    return collapsed[:TITLE_FROM_MESSAGE_CHARS] or None
