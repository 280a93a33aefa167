"""Items (SPEC 15): OpenAI's Responses / Conversations item format, and the two views of one
history — the chat message an item is, and the items a chat message is.

An item is any JSON object with a string ``type`` (or the short form of a message,
``{"role", "content"}``); the store keeps it whole, whatever its type. Some items are also chat
messages, and appear in the chat views (``list_messages``, ``get_chat_history``, the context
window, search, token counts):

- a ``message`` item is a message of its role (``developer`` as ``system``): text parts its
  text, image, file and audio parts their chat parts, a refusal part the assistant's refusal;
- a ``function_call`` (or ``custom_tool_call``) is an assistant message with that one tool call;
- a ``function_call_output`` (or ``custom_tool_call_output``) is the tool message answering it.

Items with no chat equivalent (reasoning, hosted tool calls, compaction, types the store does
not know) are in no chat view. Conversely, a message appended the chat way reads as items:
:func:`message_items` gives its message item (if it has text or a refusal), one call item per
tool call, or, for a tool message, the output item; their ids are derived from the message's,
so :func:`message_id_of` finds the message again.

Everything here is pure: no database, no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from chathistory.errors import FieldError, ValidationError

CHAT_ITEM_TYPES: Final = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
    }
)
"""Item types that are chat messages too (when their content has a chat form)."""
ITEM_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system"}
ITEM_ROLES_IN_CHAT: Final = ITEM_ROLES | {"developer": "system"}

# Derived ids of the items a chat-way message reads as: prefix + the message id's hex (+ the
# call's index for a tool call), so an id names the message it came from.
_MESSAGE_PREFIX: Final = "msg_"
_CALL_PREFIX: Final = "fc_"
_OUTPUT_PREFIX: Final = "fco_"
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text"})


def item_type(item: Any, *, loc: tuple[str | int, ...] = ()) -> str:
    """The type of ``item``: its string ``type``, or ``message`` for the short form of a
    message (``role`` and ``content``, no ``type``). Anything else is a
    :class:`~chathistory.errors.ValidationError` at ``loc``."""
    if not isinstance(item, Mapping):
        raise ValidationError([FieldError(loc, "an item must be a JSON object")])
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"
    if not isinstance(kind, str) or not kind:
        raise ValidationError(
            [FieldError((*loc, "type"), "an item needs a non-empty string 'type'")]
        )
    return kind


def chat_message(
    item: Mapping[str, Any], *, loc: tuple[str | int, ...] = ()
) -> dict[str, Any] | None:
    """The chat message ``item`` is, as a dict that :class:`~chathistory.schemas.MessageCreate`
    validates (so an item's chat form obeys every rule a message does), or ``None`` for an item
    with no chat equivalent."""
    kind = item_type(item, loc=loc)
    if kind == "message":
        return _message(item, loc)
    if kind in ("function_call", "custom_tool_call"):
        call_id = _string(item, "call_id", loc)
        name = _string(item, "name", loc)
        call: dict[str, Any]
        if kind == "function_call":
            function = {"name": name, "arguments": _string(item, "arguments", loc)}
            call = {"id": call_id, "type": "function", "function": function}
        else:
            custom = {"name": name, "input": _string(item, "input", loc)}
            call = {"id": call_id, "type": "custom", "custom": custom}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        text = output if isinstance(output, str) else _joined_text(output, (*loc, "output"))
        return {"role": "tool", "tool_call_id": _string(item, "call_id", loc), "content": text}
    return None


def _message(item: Mapping[str, Any], loc: tuple[str | int, ...]) -> dict[str, Any] | None:
    role = item.get("role")
    if role not in ITEM_ROLES_IN_CHAT:
        raise ValidationError(
            [FieldError((*loc, "role"), f"must be one of {sorted(ITEM_ROLES_IN_CHAT)}")]
        )
    chat_role = ITEM_ROLES_IN_CHAT[role]
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise ValidationError(
            [FieldError((*loc, "content"), "must be a string or a list of content parts")]
        )
    parts: list[dict[str, Any]] = []
    refusals: list[str] = []
    for index, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise ValidationError([FieldError((*loc, "content", index), "must be an object")])
        kind = part.get("type")
        if kind == "refusal" and isinstance(part.get("refusal"), str):
            refusals.append(part["refusal"])
        elif (chat_part := _chat_part(part)) is not None:
            parts.append(chat_part)
    if chat_role == "assistant" or all(part["type"] == "text" for part in parts):
        if any(part["type"] != "text" for part in parts):
            parts = [part for part in parts if part["type"] == "text"]
        text: Any = "\n".join(part["text"] for part in parts) if parts else None
    else:
        text = parts
    out: dict[str, Any] = {"role": chat_role, "content": text}
    if refusals and chat_role == "assistant":
        out["refusal"] = "\n".join(refusals)
    if text is None and "refusal" not in out:
        return None  # nothing a chat message could say (a message of image ids only, say)
    return out


def _chat_part(part: Mapping[str, Any]) -> dict[str, Any] | None:
    """The chat content part of a Responses content part, if it has one."""
    kind = part.get("type")
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_id", "file_data", "filename") if part.get(k)}
        return {"type": "file", "file": file} if file else None
    if kind == "input_audio" and isinstance(part.get("input_audio"), Mapping):
        return {"type": "input_audio", "input_audio": dict(part["input_audio"])}
    return None


def _joined_text(parts: Any, loc: tuple[str | int, ...]) -> str:
    if not isinstance(parts, list):
        raise ValidationError([FieldError(loc, "must be a string or a list of content parts")])
    return "\n".join(
        part["text"]
        for part in parts
        if isinstance(part, Mapping)
        and part.get("type") in _TEXT_PARTS
        and isinstance(part.get("text"), str)
    )


def _string(item: Mapping[str, Any], key: str, loc: tuple[str | int, ...]) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ValidationError([FieldError((*loc, key), "must be a string")])
    return value


# -- a chat-way message's items ------------------------------------------------------------------


def message_items(message: Any) -> list[dict[str, Any]]:
    """The items a message appended the chat way reads as (anything with a message's
    attributes: ``id``, ``role``, ``content``, ``tool_calls``, ``tool_call_id``, ``refusal``,
    ``status``), in OpenAI's long form."""
    hex_id = message.id.hex
    if message.role == "tool":
        output = (
            message.content
            if isinstance(message.content, str)
            else _joined_text(message.content, ("content",))
        )
        return [
            {
                "type": "function_call_output",
                "id": f"{_OUTPUT_PREFIX}{hex_id}",
                "call_id": message.tool_call_id,
                "output": output,
                "status": "completed",
            }
        ]
    items: list[dict[str, Any]] = []
    parts = _item_parts(message.role, message.content)
    refusal = getattr(message, "refusal", None)
    if refusal is not None:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts or not message.tool_calls:
        items.append(
            {
                "type": "message",
                "id": f"{_MESSAGE_PREFIX}{hex_id}",
                "role": message.role,
                "content": parts,
                "status": message.status,
            }
        )
    for index, call in enumerate(message.tool_calls or ()):
        item: dict[str, Any] = {
            "id": f"{_CALL_PREFIX}{hex_id}_{index}",
            "call_id": call["id"],
            "status": "completed",
        }
        if call.get("type") == "custom":
            item |= {"type": "custom_tool_call", "name": call["custom"]["name"]}
            item["input"] = call["custom"]["input"]
        else:
            item |= {"type": "function_call", "name": call["function"]["name"]}
            item["arguments"] = call["function"]["arguments"]
        items.append(item)
    return items


def _item_parts(role: str, content: Any) -> list[dict[str, Any]]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_part(text_type, content)]
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append(_text_part(text_type, part["text"]))
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": part["refusal"]})
        elif kind == "image_url":
            image = part["image_url"]
            parts.append(
                {
                    "type": "input_image",
                    "image_url": image["url"],
                    "detail": image.get("detail", "auto"),
                }
            )
        elif kind == "file":
            parts.append({"type": "input_file", **part["file"]})
        elif kind == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part["input_audio"]})
    return parts


def _text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": kind, "text": text}


def message_id_of(item_id: str) -> uuid.UUID | None:
    """The id of the chat-way message a derived item id (:func:`message_items`) came from, or
    ``None`` when ``item_id`` is not such an id."""
    for prefix in (_MESSAGE_PREFIX, _OUTPUT_PREFIX, _CALL_PREFIX):
        if item_id.startswith(prefix):
            rest = item_id[len(prefix) :]
            if prefix == _CALL_PREFIX:
                rest, _, index = rest.partition("_")
                if not index.isdigit():
                    return None
            try:
                return uuid.UUID(hex=rest) if len(rest) == 32 else None
            except ValueError:
                return None
    return None


class ItemPage(BaseModel):
    """One page of a conversation's items (SPEC 15), in OpenAI's list shape: ``first_id`` and
    ``last_id`` name the first and last item of ``data``; ``after=last_id`` continues."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    has_more: bool
    first_id: str | None
    last_id: str | None


class ItemsCreate(BaseModel):
    """A request body adding items: ``{"items": [...]}``, as OpenAI's Conversations API has it."""

    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(
        min_length=1,
        description="Items of OpenAI's Responses / Conversations item format, stored whole.",
    )
