"""Search's answer (SPEC 8): a page of hits, newest first, each a message with its conversation
and a snippet ready to render."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chathistory.schemas.base import Page, every_field_required
from chathistory.schemas.messages import MessageRead


class HitConversation(BaseModel):
    """The conversation a hit belongs to, as a sidebar shows it."""

    model_config = ConfigDict(json_schema_extra=every_field_required)

    id: uuid.UUID
    title: str | None = Field(
        description="The conversation's title as stored, not HTML-escaped (unlike the "
        "snippet): escape it to render it as HTML."
    )


class SearchHit(BaseModel):
    """One message that matched, with where it lives and an excerpt around the match."""

    model_config = ConfigDict(json_schema_extra=every_field_required)

    object: Literal["search.hit"] = "search.hit"
    message: MessageRead
    conversation: HitConversation
    snippet: str = Field(
        description="A short excerpt around the first match: HTML-escaped text with every "
        "matched word in <mark>…</mark>, safe to render as HTML as is; … marks a cut."
    )


class SearchPage(Page[SearchHit]):
    """A page of search hits, newest message first."""
