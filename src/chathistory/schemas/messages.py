"""Messages: what an append takes (tool calls, audio, citations, OpenAI's extras), what a read
gives back, in OpenAI's chat format too, and the context window (SPEC sections 1 and 4)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from chathistory.content_parts import check_parts, field_error
from chathistory.schemas.base import (
    MAX_ID_CHARS,
    MAX_NAME,
    MAX_TOOL_CALLS,
    READ,
    Content,
    ContentType,
    Input,
    Metadata,
    Page,
    Role,
    Status,
    Text,
    check_metadata,
    storable,
)
from chathistory.schemas.lifecycle import optional_in_clients
from chathistory.schemas.openai import (
    ChatMessage,
    ChatToolCall,
    ContextMessage,
    DocumentedAs,
    MessageContent,
)

# OpenAI SDK objects dumped to dicts carry these keys, empty, on every assistant message.
_IGNORED_WHEN_EMPTY = ("refusal", "audio", "function_call", "annotations")


class FunctionCall(Input):
    name: Text = Field(min_length=1, max_length=MAX_ID_CHARS)
    arguments: Text


class ToolCall(Input):
    """A function tool call of an assistant message, exactly OpenAI's shape."""

    id: Text = Field(min_length=1, max_length=MAX_ID_CHARS)
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomToolInput(Input):
    name: Text = Field(min_length=1, max_length=MAX_ID_CHARS)
    input: Text


class CustomToolCall(Input):
    """A custom tool call (free-form input), exactly OpenAI's shape."""

    id: Text = Field(min_length=1, max_length=MAX_ID_CHARS)
    type: Literal["custom"]
    custom: CustomToolInput


def _tool_call_type(value: Any) -> str:
    kind = value.get("type", "function") if isinstance(value, Mapping) else None
    kind = getattr(value, "type", kind) if isinstance(value, BaseModel) else kind
    # Anything else (not an object, an unknown type) fails as a function call, with its reason.
    return "custom" if kind == "custom" else "function"


AnyToolCall = Annotated[
    Annotated[ToolCall, Tag("function")] | Annotated[CustomToolCall, Tag("custom")],
    Discriminator(_tool_call_type),
]


class Audio(Input):
    """An assistant's audio answer as OpenAI returns it (``message.audio``)."""

    id: Text = Field(min_length=1, max_length=MAX_ID_CHARS)
    data: Text | None = None
    expires_at: int | None = None
    transcript: Text | None = None


def _typed_only(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a model that keeps unknown keys: the document shows the typed
    keys only (no index signature in a generated client, so the SDK's types fit it)."""
    schema.pop("additionalProperties", None)


_KEEPS_MORE = ConfigDict(extra="allow", json_schema_extra=_typed_only)


class URLCitation(BaseModel):
    """Where a web search result is cited in an assistant's answer, and what it is."""

    model_config = _KEEPS_MORE

    start_index: StrictInt = Field(ge=0)
    end_index: StrictInt = Field(ge=0)
    title: Text
    url: Text


class Annotation(BaseModel):
    """A citation of an assistant's answer, as OpenAI returns it (``url_citation``, from web
    search). Keys OpenAI adds beyond the typed ones are kept as given."""

    model_config = _KEEPS_MORE

    type: Literal["url_citation"]
    url_citation: URLCitation


def few_tool_calls(value: Any) -> Any:
    """A ``before`` check of a message's ``tool_calls``: at most :data:`MAX_TOOL_CALLS`,
    refused before any of them is validated."""
    if isinstance(value, list | tuple) and len(value) > MAX_TOOL_CALLS:
        raise PydanticCustomError(
            "too_long",
            f"holds {len(value)} tool calls; a message holds at most {MAX_TOOL_CALLS}",
        )
    return value


# The parts of an assistant message that OpenAI returns beside content and tool calls; stored
# together (``messages.extras``) and read back whole.
EXTRAS = ("refusal", "annotations", "audio", "function_call")


class MessageCreate(Input):
    """A message to append. ``id`` makes the append idempotent; the store assigns ``seq``."""

    id: uuid.UUID | None = None
    role: Role
    content: Content = None
    name: Text | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    tool_calls: list[AnyToolCall] | None = Field(default=None, max_length=MAX_TOOL_CALLS)
    tool_call_id: Text | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    metadata: Metadata = Field(default_factory=dict)
    refusal: Text | None = None
    annotations: list[Annotation] | None = None
    audio: Audio | None = None
    function_call: FunctionCall | None = None
    status: Status = Field(
        default="completed",
        description="in_progress to store an assistant message as it streams (section 10)",
        json_schema_extra=optional_in_clients,
    )
    parent_id: uuid.UUID | None = Field(
        default=None,
        description="branch from this message (null: a new first message); left out, the "
        "message follows the conversation's current message (section 11)",
        json_schema_extra=optional_in_clients,
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_empty_openai_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(k in data for k in _IGNORED_WHEN_EMPTY):
            data = dict(data)
            for key in _IGNORED_WHEN_EMPTY:
                if key in data and data[key] in (None, []):
                    del data[key]
        return data

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: Metadata) -> Metadata:
        return check_metadata(value)

    @field_validator("annotations", mode="before")
    @classmethod
    def _annotations(cls, value: Any) -> Any:
        return storable(value)

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _few_tool_calls(cls, value: Any) -> Any:
        return few_tool_calls(value)

    @field_validator("tool_calls")
    @classmethod
    def _tool_calls(cls, value: list[AnyToolCall] | None) -> list[AnyToolCall] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must hold at least one tool call, or be null")
        ids = [call.id for call in value]
        if len(set(ids)) != len(ids):
            raise ValueError("tool call ids must be unique within a message")
        return value

    @model_validator(mode="after")
    def _role_rules(self) -> MessageCreate:
        if self.role == "tool" and self.tool_call_id is None:
            raise field_error("tool_call_id", "is required for a tool message")
        if self.role != "tool" and self.tool_call_id is not None:
            raise field_error("tool_call_id", "is only allowed on a tool message")
        for field in ("tool_calls", *EXTRAS):
            if self.role != "assistant" and getattr(self, field) is not None:
                raise field_error(field, "is only allowed on an assistant message")
        if self.status != "completed" and self.role != "assistant":
            raise field_error("status", "only an assistant message can be other than completed")
        if self.content is None and self.tool_calls is None and self.stored_extras() is None:
            raise field_error(
                "content",
                "may be null only on an assistant message that has tool_calls (or a refusal, "
                "audio or a function_call)",
            )
        if isinstance(self.content, list):
            check_parts(self.role, self.content)
        return self

    def text(self) -> str:
        return content_text(self.content)

    def text_size(self) -> int:
        """Characters counted against the content limit: text, tool call arguments and
        inputs, a refusal, an audio transcript."""
        size = len(self.text()) + len(self.refusal or "")
        for call in self.tool_calls or ():
            size += len(
                call.function.arguments if isinstance(call, ToolCall) else call.custom.input
            )
        if self.function_call is not None:
            size += len(self.function_call.arguments)
        if self.audio is not None:
            size += len(self.audio.transcript or "")
        return size

    def stored_tool_calls(self) -> list[dict[str, Any]] | None:
        if self.tool_calls is None:
            return None
        return [call.model_dump() for call in self.tool_calls]

    def stored_extras(self) -> dict[str, Any] | None:
        """Refusal, annotations, audio and function_call as given (``None`` when none is)."""
        extras: dict[str, Any] = {}
        if self.refusal is not None:
            extras["refusal"] = self.refusal
        if self.annotations is not None:
            extras["annotations"] = [a.model_dump() for a in self.annotations]
        if self.audio is not None:
            extras["audio"] = self.audio.model_dump(exclude_unset=True)
        if self.function_call is not None:
            extras["function_call"] = self.function_call.model_dump()
        return extras or None


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text that token counts, titles and search see: a string, or its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(
        part["text"] for part in content if part.get("type") == "text" and "text" in part
    )


# The JSON values of a read message stay the dicts that were stored (the store builds read
# models without validation); the OpenAPI document shows their typed shapes (DocumentedAs).
class MessageRead(BaseModel):
    model_config = READ

    object: Literal["message"] = "message"
    id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: str
    seq: int
    role: Role
    content: Annotated[ContentType, DocumentedAs(MessageContent)]
    name: str | None
    tool_calls: Annotated[list[dict[str, Any]] | None, DocumentedAs(list[ChatToolCall] | None)]
    tool_call_id: str | None
    metadata: Metadata
    token_count: int | None
    created_at: datetime
    status: Status = Field(
        description="in_progress while the message streams (section 10); an in_progress "
        "message not updated within the stream timeout reads as incomplete",
    )
    updated_at: datetime = Field(description="created_at until a streaming update")
    parent_id: uuid.UUID | None = Field(description="the message this one follows (section 11)")
    sibling_count: int = Field(default=1, description="messages with the same parent")
    sibling_index: int = Field(default=1, description="1-based, in seq order")
    refusal: str | None = None
    annotations: Annotated[list[dict[str, Any]] | None, DocumentedAs(list[Annotation] | None)] = (
        None
    )
    audio: Annotated[dict[str, Any] | None, DocumentedAs(Audio | None)] = None
    function_call: Annotated[dict[str, Any] | None, DocumentedAs(FunctionCall | None)] = None

    def to_openai(self) -> ChatMessage:
        """The message in OpenAI's chat format, whole: exactly what was stored (an assistant
        message as the SDK returned it keeps its refusal, annotations, audio, function_call).
        Typed as the ``openai`` SDK's ``ChatCompletionMessageParam`` accepts it."""
        out = openai_message(self)
        for key in EXTRAS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return cast(ChatMessage, out)


def openai_message(message: Any) -> dict[str, Any]:
    """OpenAI's chat format of anything with a message's attributes (a read model, a row),
    without the assistant's extras."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls is not None:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def input_message(row: Any) -> ChatMessage:
    """A stored message as Chat Completions accepts it as input (the context window): an
    assistant's refusal and function_call as given, its audio reduced to ``{"id": ...}``, no
    annotations (a response-only field)."""
    out = openai_message(row)
    extras = row.extras or {}
    if "refusal" in extras:
        out["refusal"] = extras["refusal"]
    if "function_call" in extras:
        out["function_call"] = extras["function_call"]
    if "audio" in extras:
        out["audio"] = {"id": extras["audio"]["id"]}
    return cast(ChatMessage, out)


class MessagePage(Page[MessageRead]):
    """A page of messages, also carrying OpenAI's ``first_id`` / ``last_id``."""

    first_id: uuid.UUID | None
    last_id: uuid.UUID | None


# ContextWindow.messages: a list of the openai SDK's ChatCompletionMessageParam, to type checkers.
if TYPE_CHECKING:
    WindowMessages: TypeAlias = list[ChatMessage]
else:  # what pydantic validates: the dicts as built, unchanged; documented by role
    WindowMessages = Annotated[list[dict[str, Any]], DocumentedAs(list[ContextMessage])]


class ContextWindow(BaseModel):
    """What to send to an LLM: messages in OpenAI chat format, oldest first (SPEC section 4)."""

    model_config = READ

    object: Literal["context_window"] = "context_window"
    messages: WindowMessages
    token_count: int = Field(description="tokens of the messages plus the reply's priming")
    max_tokens: int
    truncated: bool = Field(description="older messages were left out to fit the budget")
    encoding: str
    exact: bool = Field(description="counted by a BPE tokenizer (false: the byte estimate)")
