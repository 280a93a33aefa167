"""The ground every model stands on: the data model's limits, what text and JSON can be
stored, metadata, the base of input models, pages, and pydantic's errors as the package's own
(SPEC section 1).

Static rules live on the models; the store applies them (and its configurable size limits) to
every write, whichever face the write came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Generic, Literal, TypeVar

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator

from chathistory.errors import FieldError, ValidationError
from chathistory.schemas.openai import MessageContent

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
# How deep arrays and objects may nest in a JSON value the store keeps (a message's content
# parts, its annotations), counted from the field's own value. The storage rule, the same on
# every face (library, HTTP, CLI, MCP, import): a chat message needs a handful of levels, and
# a bounded value is one every backend can store alike (find_unstorable). The HTTP body parser
# has its own, looser bound on a whole request: MAX_BODY_JSON_DEPTH in chathistory.http.requests.
MAX_JSON_DEPTH = 32
MAX_TOOL_CALLS = 128
"""Tool calls one message holds at most (OpenAI's own bound on the tools of one request)."""

# Characters PostgreSQL TEXT / JSONB cannot hold: NUL and UTF-16 surrogates (a str holding one
# is not valid Unicode text and cannot be encoded as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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


def storable(value: Any) -> Any:
    """``value`` unchanged, or ``ValueError`` if :func:`find_unstorable` finds something in it."""
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
    storable(value)
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
        return storable(value)
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        return storable(value)
    raise ValueError("must be a string, a list of content parts (objects), or null")


Metadata = dict[str, str]
Storable = AfterValidator(storable)
Text = Annotated[str, Storable]
ContentType = str | list[dict[str, Any]] | None
# Validated by the rules above and content_parts.check_parts, documented as OpenAI's typed
# content parts.
Content = Annotated[ContentType, PlainValidator(_content, json_schema_input_type=MessageContent)]


class Input(BaseModel):
    """The base of every model the store takes in (messages, conversations, streaming updates,
    the records of an import): an unknown field is an error, strings are kept as given."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def every_field_required(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of read models: every field is in every answer, defaulted ones
    (``object``, an assistant's extras) too, so the document marks them all required."""
    schema["required"] = list(schema.get("properties", {}))


READ = ConfigDict(frozen=True, json_schema_extra=every_field_required)
"""The config of read models: frozen, every field required in the document."""

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list. ``next_cursor`` continues after the last item (``None`` if empty)."""

    model_config = ConfigDict(json_schema_extra=every_field_required)

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None
