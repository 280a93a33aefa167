"""A streaming update of an in-progress assistant message (SPEC 10). No database access here."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from chathistory.schemas.base import MAX_TOOL_CALLS, Content, Input, Status, Text
from chathistory.schemas.messages import AnyToolCall, few_tool_calls

UPDATE_FIELDS = ("content", "append_text", "tool_calls", "status")


class MessageUpdate(Input):
    """What an update changes; a field left out stays as it is. The message it makes is
    checked by the rules of an append (content, tool calls, size limit). ``content`` replaces the
    content, then ``append_text`` is added to the end of its text (to the last text part of a
    list of parts, or as a new one); ``tool_calls`` replaces the calls; ``completed`` or
    ``incomplete`` finishes the message, which then never changes again."""

    content: Content = Field(default=None, description="the new content (left out: kept)")
    append_text: Text | None = Field(
        default=None, description="text added to the end of the content's text"
    )
    tool_calls: list[AnyToolCall] | None = Field(
        default=None,
        max_length=MAX_TOOL_CALLS,
        description="the message's tool calls, all of them (left out: kept)",
    )
    status: Status | None = Field(
        default=None, description="completed or incomplete finish the message"
    )

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _few_tool_calls(cls, value: Any) -> Any:
        return few_tool_calls(value)

    @model_validator(mode="after")
    def _something(self) -> MessageUpdate:
        if not self.model_fields_set & set(UPDATE_FIELDS):
            raise ValueError(f"give at least one of {', '.join(UPDATE_FIELDS)}")
        return self

    def applied_to(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The message (``stored``: an append's fields) with this update applied."""
        given = self.model_fields_set
        updated = dict(stored)
        if "content" in given:
            updated["content"] = self.content
        if self.append_text is not None:
            updated["content"] = extended(updated["content"], self.append_text)
        if "tool_calls" in given:
            updated["tool_calls"] = (
                None if self.tool_calls is None else [c.model_dump() for c in self.tool_calls]
            )
        if self.status is not None:
            updated["status"] = self.status
        return updated


def extended(content: Any, text: str) -> Any:
    """``content`` with ``text`` added to the end of its text."""
    if content is None:
        return text
    if isinstance(content, str):
        return content + text
    parts = list(content)
    if parts and parts[-1].get("type") == "text" and isinstance(parts[-1].get("text"), str):
        parts[-1] = {**parts[-1], "text": parts[-1]["text"] + text}
    else:
        parts.append({"type": "text", "text": text})
    return parts
