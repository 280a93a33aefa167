"""Input and output models, and the validation rules of the data model (SPEC section 1).

Static rules live on the models; the store applies them (and its configurable size limits) to
every write, whichever face the write came from.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeAlias, TypeVar, cast

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from chathistory.content_parts import check_parts, field_error
from chathistory.errors import FieldError, ValidationError
from chathistory.lifecycle_schemas import FutureInstant, Switch, optional_in_clients
from chathistory.openai_types import (
    ChatMessage,
    ChatToolCall,
    ContextMessage,
    DocumentedAs,
    MessageContent,
)

Role = Literal["system", "user", "assistant", "tool"]
Status = Literal["completed", "in_progress", "incomplete"]

MAX_USER_ID = 255
MAX_TITLE = 255
MAX_NAME = 64
MAX_ID_CHARS = 255
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
TITLE_FROM_MESSAGE_CHARS = 80
MAX_JSON_DEPTH = 32
MAX_TOOL_CALLS = 128
"""Tool calls one message holds at most (OpenAI's own bound on the tools of one request)."""

# Characters PostgreSQL TEXT / JSONB cannot hold: NUL and UTF-16 surrogates (a str holding one
# is not valid Unicode text and cannot be encoded as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# OpenAI SDK objects dumped to dicts carry these keys, empty, on every assistant message.
_IGNORED_WHEN_EMPTY = ("refusal", "audio", "function_call", "annotations")


def find_unstorable(value: Any, loc: tuple[str | int, ...] = ()) -> FieldError | None:
    """The first thing in a JSON value that no backend can store alike: a string (or key)
    holding NUL or a lone surrogate, a non-finite number, or nesting deeper than the limit."""
    if isinstance(value, str):
        match = _UNSTORABLE.search(value)
        if match is None:
            return None
        what = "the NUL character" if match.group() == "\x00" else "a lone surrogate"
        return FieldError(
            loc,
            f"text contains {what} (U+{ord(match.group()):04X}) at index {match.start()}, "
            "which cannot be stored",
            "unstorable_text",
        )
    if isinstance(value, float) and not math.isfinite(value):
        return FieldError(loc, f"{value} is not a JSON number", "unstorable_value")
    if isinstance(value, Mapping | list | tuple):
        if len(loc) > MAX_JSON_DEPTH:
            return FieldError(loc, f"nested deeper than {MAX_JSON_DEPTH} levels", "too_deep")
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for key, item in items:
            where = (*loc, key if isinstance(key, int) else str(key))
            found = (isinstance(key, str) and find_unstorable(key, where)) or find_unstorable(
                item, where
            )
            if found:
                return found
    return None


def _storable(value: Any) -> Any:
    found = find_unstorable(value)
    if found is not None:
        raise ValueError(found.msg)
    return value


def check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str):
        raise ValidationError("must be a string", loc=("user_id",))
    if not 1 <= len(user_id) <= MAX_USER_ID:
        raise ValidationError(f"must be 1 to {MAX_USER_ID} characters", loc=("user_id",))
    found = find_unstorable(user_id, ("user_id",))
    if found:
        raise ValidationError([found])
    return user_id


def check_metadata(value: Mapping[str, Any]) -> dict[str, str]:
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys allowed, got {len(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY:
            raise ValueError(f"keys must be strings of 1 to {MAX_METADATA_KEY} characters")
        if not isinstance(item, str):
            raise ValueError(f"value of {key!r} must be a string")
        if len(item) > MAX_METADATA_VALUE:
            raise ValueError(f"value of {key!r} is longer than {MAX_METADATA_VALUE} characters")
    _storable(value)
    return dict(value)


def from_pydantic(error: pydantic.ValidationError) -> ValidationError:
    """Translate pydantic's error into the package's own, keeping each field's location."""
    return ValidationError(
        [
            FieldError(_untagged(tuple(e["loc"])), _message(e), e["type"])
            for e in error.errors(include_url=False)
        ]
    )


def _message(error: Any) -> str:
    """Pydantic's message; a text's length in characters (a length checked after a validator
    is counted in "items")."""
    if error["type"] in ("too_long", "too_short") and isinstance(error.get("input"), str):
        bound = "most" if error["type"] == "too_long" else "least"
        limit = error["ctx"]["max_length" if bound == "most" else "min_length"]
        return f"should have at {bound} {limit} characters, not {len(error['input'])}"
    return str(error["msg"]).removeprefix("Value error, ")


def _untagged(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """A location without the tag pydantic puts after a tool call's index (``function`` or
    ``custom``): ``tool_calls.0.function.name``, not ``tool_calls.0.function.function.name``."""
    for at in range(len(loc) - 2):
        tagged = loc[at] == "tool_calls" and isinstance(loc[at + 1], int)
        if tagged and loc[at + 2] in ("function", "custom"):
            return (*loc[: at + 2], *loc[at + 3 :])
    return loc


def _content(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return _storable(value)
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        return _storable(value)
    raise ValueError("must be a string, a list of content parts (objects), or null")


Metadata = dict[str, str]
Storable = AfterValidator(_storable)
Text = Annotated[str, Storable]
ContentType = str | list[dict[str, Any]] | None
# Validated by the rules above and content_parts.check_parts, documented as OpenAI's typed
# content parts.
Content = Annotated[ContentType, PlainValidator(_content, json_schema_input_type=MessageContent)]


class Input(BaseModel):
    """The base of every model the store takes in (here, in ``record_schemas`` and
    ``streaming_schemas``): an unknown field is an error, strings are kept as given."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


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
        return _storable(value)

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


def every_field_required(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of read models: every field is in every answer, defaulted ones
    (``object``, an assistant's extras) too, so the document marks them all required."""
    schema["required"] = list(schema.get("properties", {}))


_READ = ConfigDict(frozen=True, json_schema_extra=every_field_required)


class ConversationRead(BaseModel):
    model_config = _READ

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


# The JSON values of a read message stay the dicts that were stored (the store builds read
# models without validation); the OpenAPI document shows their typed shapes (DocumentedAs).
class MessageRead(BaseModel):
    model_config = _READ

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


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list. ``next_cursor`` continues after the last item (``None`` if empty)."""

    model_config = ConfigDict(json_schema_extra=every_field_required)

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None


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

    model_config = _READ

    object: Literal["context_window"] = "context_window"
    messages: WindowMessages
    token_count: int = Field(description="tokens of the messages plus the reply's priming")
    max_tokens: int
    truncated: bool = Field(description="older messages were left out to fit the budget")
    encoding: str
    exact: bool = Field(description="counted by a BPE tokenizer (false: the byte estimate)")


def title_from(text: str) -> str | None:
    collapsed = " ".join(text.split())
    return collapsed[:TITLE_FROM_MESSAGE_CHARS] or None
