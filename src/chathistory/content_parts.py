"""The content parts a message may hold, as OpenAI's chat format defines them for each role
(SPEC sections 1 and 13), so that every stored message can be sent back to Chat Completions
as it is: a user message holds text, image, audio and file parts; an assistant message text
and refusal parts; system and tool messages text parts. Each part's own fields are checked
for the types and values OpenAI takes (an image's ``detail`` is one of OpenAI's levels, an
audio's ``format`` ``wav`` or ``mp3``). Keys a part carries beyond those are kept as given.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, get_args

import pydantic

ImageDetail: TypeAlias = Literal["auto", "low", "high", "original"]
AudioFormat: TypeAlias = Literal["wav", "mp3"]
IMAGE_DETAILS: Final = frozenset(get_args(ImageDetail))
AUDIO_FORMATS: Final = frozenset(get_args(AudioFormat))

PART_TYPES: Final[dict[str, frozenset[str]]] = {
    "system": frozenset({"text"}),
    "tool": frozenset({"text"}),
    "assistant": frozenset({"text", "refusal"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
}


def field_error(field: str, msg: str) -> pydantic.ValidationError:
    """A validation error of one field, raised by a model's own checks (after its fields
    validated), reported like pydantic's own."""
    return pydantic.ValidationError.from_exception_data(
        "MessageCreate",
        [{"type": "value_error", "loc": (field,), "input": None, "ctx": {"error": msg}}],
    )


def check_parts(role: str, parts: list[dict[str, Any]]) -> None:
    """Raise a ``content`` error for the first part ``role`` may not hold as it is."""
    if not parts:
        raise field_error("content", "a list of content parts must not be empty")
    allowed = PART_TYPES[role]
    for index, part in enumerate(parts):
        kind = part.get("type")
        if not isinstance(kind, str) or not kind:
            raise field_error("content", f"part {index} needs a string 'type'")
        if kind not in allowed:
            raise field_error(
                "content",
                f"part {index}: a {role} message may hold only {sorted(allowed)} parts",
            )
        problem = _part_problem(kind, part)
        if problem is not None:
            raise field_error("content", f"part {index}: {problem}")


def _part_problem(kind: str, part: dict[str, Any]) -> str | None:
    if kind in ("text", "refusal"):
        return None if isinstance(part.get(kind), str) else f"a {kind} part needs a string {kind!r}"
    value = part.get(kind)
    if not isinstance(value, dict):
        return f"a {kind} part needs an object {kind!r}"
    if kind == "image_url":
        if not isinstance(value.get("url"), str):
            return "image_url needs an object with 'url'"
        if "detail" in value and value["detail"] not in IMAGE_DETAILS:
            return f"image_url.detail must be one of {sorted(IMAGE_DETAILS)}"
    elif kind == "input_audio":
        if not isinstance(value.get("data"), str):
            return "input_audio needs a base64 string 'data'"
        if value.get("format") not in AUDIO_FORMATS:
            return f"input_audio.format must be one of {sorted(AUDIO_FORMATS)}"
    else:  # file
        for key in ("file_id", "file_data", "filename"):
            if key in value and not isinstance(value[key], str):
                return f"file.{key} must be a string"
    return None


__all__ = [
    "AUDIO_FORMATS",
    "IMAGE_DETAILS",
    "PART_TYPES",
    "AudioFormat",
    "ImageDetail",
    "check_parts",
    "field_error",
]
