"""chathistory: durable, multi-tenant chat history for AI assistants.

from chathistory import ChatHistory

async with ChatHistory.open("postgresql://...") as store:
    conv = await store.get_or_create_conversation("user-1")
    await store.add_message("user-1", conv.id, "user", "Hello")
"""

from chathistory.errors import (
    ChatHistoryError,
    ConfigurationError,
    ConflictError,
    ConversationNotFoundError,
    FieldError,
    InvalidCursorError,
    ItemNotFoundError,
    MessageNotFoundError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from chathistory.schemas import (
    ConversationCreate,
    ConversationRead,
    ConversationUpdate,
    MessageCreate,
    MessagePage,
    MessageRead,
    Page,
    ToolCall,
)
from chathistory.schemas.lifecycle import PurgeReport
from chathistory.store import UNSET, ChatHistory

__version__ = "0.1.0"

__all__ = [
    "UNSET",
    "ChatHistory",
    "ChatHistoryError",
    "ConfigurationError",
    "ConflictError",
    "ConversationCreate",
    "ConversationNotFoundError",
    "ConversationRead",
    "ConversationUpdate",
    "FieldError",
    "InvalidCursorError",
    "ItemNotFoundError",
    "MessageCreate",
    "MessageNotFoundError",
    "MessagePage",
    "MessageRead",
    "NotFoundError",
    "Page",
    "PurgeReport",
    "ToolCall",
    "UnavailableError",
    "ValidationError",
    "__version__",
]
