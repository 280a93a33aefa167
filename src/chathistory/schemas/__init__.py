"""Input and output models, and the validation rules of the data model (SPEC section 1): one
module per family.

- ``base``: the limits, storable text and JSON, metadata, ``Input`` (the base of every input
  model), ``Page``, pydantic's errors as the package's own.
- ``messages``: an append (``MessageCreate``, its tool calls, audio, citations), a read
  (``MessageRead``, in OpenAI's format too), ``MessagePage``, ``ContextWindow``.
- ``conversations``: create, update, read, the title taken from the first message.
- ``lifecycle``: archive, pin, expiry and purge values (SPEC 9).
- ``search``: a page of search hits (SPEC 8).
- ``streaming``: an update of an in-progress message (SPEC 10).
- ``transfer``: the records of export files, as import reads them.
- ``openai``: OpenAI's chat format, typed, for type checkers and the OpenAPI document.
- ``responses``: the HTTP API's answers beyond the models above (no FastAPI here).

This package re-exports the models and rules of ``base``, ``messages`` and ``conversations``.
"""

from chathistory.schemas.base import (
    MAX_ID_CHARS,
    MAX_JSON_DEPTH,
    MAX_METADATA_KEY,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE,
    MAX_NAME,
    MAX_TITLE,
    MAX_TOOL_CALLS,
    MAX_USER_ID,
    TITLE_FROM_MESSAGE_CHARS,
    Content,
    ContentType,
    Input,
    Metadata,
    Page,
    Role,
    Status,
    Storable,
    Text,
    check_metadata,
    check_user_id,
    every_field_required,
    find_unstorable,
    from_pydantic,
)
from chathistory.schemas.conversations import (
    ConversationCreate,
    ConversationRead,
    ConversationUpdate,
    title_from,
)
from chathistory.schemas.messages import (
    EXTRAS,
    Annotation,
    AnyToolCall,
    Audio,
    ContextWindow,
    CustomToolCall,
    CustomToolInput,
    FunctionCall,
    MessageCreate,
    MessagePage,
    MessageRead,
    ToolCall,
    URLCitation,
    WindowMessages,
    content_text,
    few_tool_calls,
    input_message,
    openai_message,
)

__all__ = [
    "EXTRAS",
    "MAX_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_METADATA_KEY",
    "MAX_METADATA_KEYS",
    "MAX_METADATA_VALUE",
    "MAX_NAME",
    "MAX_TITLE",
    "MAX_TOOL_CALLS",
    "MAX_USER_ID",
    "TITLE_FROM_MESSAGE_CHARS",
    "Annotation",
    "AnyToolCall",
    "Audio",
    "Content",
    "ContentType",
    "ContextWindow",
    "ConversationCreate",
    "ConversationRead",
    "ConversationUpdate",
    "CustomToolCall",
    "CustomToolInput",
    "FunctionCall",
    "Input",
    "MessageCreate",
    "MessagePage",
    "MessageRead",
    "Metadata",
    "Page",
    "Role",
    "Status",
    "Storable",
    "Text",
    "ToolCall",
    "URLCitation",
    "WindowMessages",
    "check_metadata",
    "check_user_id",
    "content_text",
    "every_field_required",
    "few_tool_calls",
    "find_unstorable",
    "from_pydantic",
    "input_message",
    "openai_message",
    "title_from",
]
