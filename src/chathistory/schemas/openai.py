"""OpenAI's chat format, typed: for Python type checkers, and for the OpenAPI document.

Two families live here:

* ``Chat*Message`` TypedDicts type what the library hands out in OpenAI's chat format
  (:meth:`~chathistory.schemas.MessageRead.to_openai`,
  :attr:`~chathistory.schemas.ContextWindow.messages`), so that a value of :data:`ChatMessage`
  type-checks as the ``openai`` SDK's ``ChatCompletionMessageParam`` without a cast. The SDK's
  TypedDicts are invariant in their keys and its content parts gain keys from release to
  release, so a content part is ``Any`` here (``content`` is a ``str`` or an iterable of
  parts); roles, names, tool calls, refusals, audio and function calls are typed exactly.
* The JSON shapes the HTTP API documents: content parts (:data:`ContentPart`, discriminated by
  ``type``) and the context window's messages (:data:`ContextMessage`, discriminated by
  ``role``), so a client generated from the OpenAPI document narrows them without casts. They
  document only: the store's validation (:mod:`chathistory.schemas`) decides what is accepted,
  and values stay the plain dicts that were stored.

:class:`DocumentedAs` joins the two worlds: a field keeps its own (permissive) type for
validation and serialization, and shows another type's JSON schema in the document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, NotRequired, Required, TypeAlias

from pydantic import ConfigDict, Field, GetJsonSchemaHandler, TypeAdapter, with_config
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

from chathistory.content_parts import AudioFormat, ImageDetail

# Each TypedDict has a config of its own, so the document shows it alike wherever it appears
# (without one, it would take the enclosing model's, such as a request model's extra="forbid").
_own = with_config(ConfigDict(extra="ignore"))

# -- tool calls, audio, function calls: exact for the SDK and the document alike ----------------


@_own
class ChatFunction(TypedDict):
    """The function a function tool call (or a legacy ``function_call``) calls."""

    name: str
    arguments: str


@_own
class ChatFunctionToolCall(TypedDict):
    """A function tool call of an assistant message."""

    id: str
    type: Literal["function"]
    function: ChatFunction


@_own
class ChatCustomTool(TypedDict):
    """The custom tool a custom tool call calls, with its free-form input."""

    name: str
    input: str


@_own
class ChatCustomToolCall(TypedDict):
    """A custom tool call of an assistant message."""

    id: str
    type: Literal["custom"]
    custom: ChatCustomTool


ChatToolCall: TypeAlias = Annotated[
    ChatFunctionToolCall | ChatCustomToolCall, Field(discriminator="type")
]


@_own
class ChatAudioRef(TypedDict):
    """An assistant's earlier audio answer, by id (what Chat Completions takes as input)."""

    id: str


# -- messages for Python type checkers (compatible with the SDK's ChatCompletionMessageParam) --


@_own
class ChatSystemMessage(TypedDict):
    role: Literal["system"]
    content: str | Iterable[Any]
    name: NotRequired[str]


@_own
class ChatUserMessage(TypedDict):
    role: Literal["user"]
    content: str | Iterable[Any]
    name: NotRequired[str]


@_own
class ChatAssistantMessage(TypedDict, total=False):
    """An assistant message. ``content`` is always there (``None`` beside tool calls); the SDK
    declares it optional, so it is optional here too. From ``to_openai()`` an ``audio`` carries
    every stored key (``data``, ``transcript``...) and ``annotations`` may be present; the
    context window sends ``audio`` as its ``id`` only and no ``annotations``."""

    role: Required[Literal["assistant"]]
    content: str | Iterable[Any] | None
    name: str
    tool_calls: Iterable[ChatToolCall]
    refusal: str | None
    audio: ChatAudioRef | None
    function_call: ChatFunction | None
    annotations: list[dict[str, Any]]


@_own
class ChatToolMessage(TypedDict):
    role: Literal["tool"]
    content: str | Iterable[Any]
    tool_call_id: str
    name: NotRequired[str]


ChatMessage: TypeAlias = (
    ChatSystemMessage | ChatUserMessage | ChatAssistantMessage | ChatToolMessage
)
"""A message in OpenAI's chat format; assignable to the ``openai`` SDK's
``ChatCompletionMessageParam`` (pass a list of them as ``messages=``)."""


# -- content parts, as the OpenAPI document shows them ------------------------------------------


@_own
class TextPart(TypedDict):
    """Text: what token counts, titles and search see."""

    type: Literal["text"]
    text: str


@_own
class ImageURL(TypedDict):
    url: Annotated[str, Field(description="an image URL, or the image as a `data:` URL")]
    detail: NotRequired[ImageDetail]


@_own
class ImagePart(TypedDict):
    """An image (user messages)."""

    type: Literal["image_url"]
    image_url: ImageURL


@_own
class InputAudio(TypedDict):
    data: Annotated[str, Field(description="the audio, base64-encoded")]
    format: AudioFormat


@_own
class InputAudioPart(TypedDict):
    """Audio (user messages)."""

    type: Literal["input_audio"]
    input_audio: InputAudio


@_own
class FileInput(TypedDict, total=False):
    file_id: str
    file_data: str
    filename: str


@_own
class FilePart(TypedDict):
    """A file, uploaded (``file_id``) or inline (``file_data``) (user messages)."""

    type: Literal["file"]
    file: FileInput


@_own
class RefusalPart(TypedDict):
    """A refusal (assistant messages)."""

    type: Literal["refusal"]
    refusal: str


ContentPart: TypeAlias = Annotated[
    TextPart | ImagePart | InputAudioPart | FilePart | RefusalPart, Field(discriminator="type")
]
AssistantPart: TypeAlias = Annotated[TextPart | RefusalPart, Field(discriminator="type")]
UserPart: TypeAlias = Annotated[
    TextPart | ImagePart | InputAudioPart | FilePart, Field(discriminator="type")
]

MessageContent: TypeAlias = str | list[ContentPart] | None
"""A message's content: a string, content parts, or null (an assistant message with tool
calls). System and tool messages hold text parts only, assistant messages text and refusal
parts, user messages every part but refusals (:mod:`chathistory.content_parts`)."""


# -- the context window's messages, as the OpenAPI document shows them ------------------------


@_own
class ContextSystemMessage(TypedDict):
    role: Literal["system"]
    content: str | list[TextPart]
    name: NotRequired[str]


@_own
class ContextUserMessage(TypedDict):
    role: Literal["user"]
    content: str | list[UserPart]
    name: NotRequired[str]


@_own
class ContextAssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None
    name: NotRequired[str]
    tool_calls: NotRequired[list[ChatToolCall]]
    refusal: NotRequired[str]
    audio: NotRequired[ChatAudioRef]
    function_call: NotRequired[ChatFunction]


@_own
class ContextToolMessage(TypedDict):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str
    name: NotRequired[str]


ContextMessage: TypeAlias = Annotated[
    ContextSystemMessage | ContextUserMessage | ContextAssistantMessage | ContextToolMessage,
    Field(discriminator="role"),
]
"""A message of a context window, as Chat Completions takes it as input."""


# -- the glue ------------------------------------------------------------------------------------


class DocumentedAs:
    """``Annotated`` metadata: the field's JSON schema (in validation and serialization mode)
    is that of ``documented``; its validation and serialization stay its own type's.

    ``content: Annotated[list[dict[str, Any]], DocumentedAs(list[ContentPart])]`` keeps the
    stored dicts as they are, and documents their shapes."""

    __slots__ = ("_core", "_documented")

    def __init__(self, documented: Any) -> None:
        self._documented = documented
        self._core: CoreSchema | None = None

    def __get_pydantic_json_schema__(
        self, _schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        if self._core is None:
            self._core = TypeAdapter(self._documented).core_schema
        # Wrapped in a definitions schema, the documented type's models and TypedDicts become
        # components of the document (``$ref``), like those of any other field.
        return handler(core_schema.definitions_schema(self._core, []))


__all__ = [
    "AssistantPart",
    "ChatAssistantMessage",
    "ChatAudioRef",
    "ChatCustomTool",
    "ChatCustomToolCall",
    "ChatFunction",
    "ChatFunctionToolCall",
    "ChatMessage",
    "ChatSystemMessage",
    "ChatToolCall",
    "ChatToolMessage",
    "ChatUserMessage",
    "ContentPart",
    "ContextAssistantMessage",
    "ContextMessage",
    "ContextSystemMessage",
    "ContextToolMessage",
    "ContextUserMessage",
    "DocumentedAs",
    "FileInput",
    "FilePart",
    "ImagePart",
    "ImageURL",
    "InputAudio",
    "InputAudioPart",
    "MessageContent",
    "RefusalPart",
    "TextPart",
    "UserPart",
]
