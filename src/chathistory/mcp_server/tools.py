"""The MCP tools over the store (SPEC section 12).

Every tool is a thin call of one :class:`~chathistory.store.ChatHistory` method. The user is
never a tool argument: ``caller_of(ctx)`` says who is calling and on which store, from the MCP
session (the ``--user`` of a stdio server, the token's ``sub`` over HTTP), so an id of another
user's conversation is simply not found. A store error becomes an MCP tool error (``isError``)
with the store's own message; the SDK turns arguments that fail the input schema into one too.
Results are the store's read models, sent as ``structuredContent`` with an output schema and
as compact JSON text for clients that read only text (:class:`HistoryServer`), the two within
the store's byte budget together.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from chathistory import __version__
from chathistory.errors import (
    ChatHistoryError,
    ConflictError,
    UnavailableError,
    ValidationError,
)
from chathistory.schemas import (
    ContextWindow,
    ConversationRead,
    MessagePage,
    MessageRead,
    Page,
    Role,
)
from chathistory.schemas.openai import ChatToolCall, DocumentedAs, MessageContent
from chathistory.schemas.search import SearchPage
from chathistory.store import MAX_PAGE, ChatHistory, Order

INSTRUCTIONS: Final = (
    "The user's stored chat history: conversations and their messages (OpenAI chat format). "
    "List or search to find a conversation, read its messages or a context window that fits a "
    "token budget, and record new conversations and messages. Lists are paged: pass a page's "
    "next_cursor as cursor to continue while has_more is true."
)

ConversationId = Annotated[uuid.UUID, Field(description="The conversation's id.")]
Limit = Annotated[int, Field(ge=1, le=MAX_PAGE, description="Page size.")]
Cursor = Annotated[
    str | None, Field(description="The next_cursor of the previous page; null for the first.")
]
Filter = bool | Literal["any"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Whose data a tool call acts on, and in which store: from the session, never an argument."""

    store: ChatHistory
    user_id: str


CallerOf = Callable[[Context], Caller]
"""How a server finds the caller of a tool call from the call's MCP context."""


class ConversationDeleted(BaseModel):
    """What ``delete_conversation`` answers (OpenAI's shape of a deletion)."""

    object: Literal["conversation.deleted"] = "conversation.deleted"
    id: uuid.UUID
    deleted: Literal[True] = True


class ConversationCleared(BaseModel):
    """What ``clear_conversation`` answers: the conversation stays, its messages are gone."""

    object: Literal["conversation.cleared"] = "conversation.cleared"
    id: uuid.UUID
    messages_deleted: int


@asynccontextmanager
async def _tool_errors() -> AsyncIterator[None]:
    """The store's errors as MCP tool errors with their message (the SDK prefixes the tool)."""
    try:
        yield
    except UnavailableError as exc:
        raise ToolError(f"{exc} (try again shortly)") from None
    except ValidationError as exc:
        raise ToolError(f"invalid input: {exc}") from None
    except ConflictError as exc:
        raise ToolError(f"conflict: {exc}") from None
    except ChatHistoryError as exc:  # not found, and any other rule of the store
        raise ToolError(str(exc)) from None


READ_ONLY: Final = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES: Final = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DELETES: Final = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)


class HistoryTools:
    """The tools, each a method whose docstring is its description for the model."""

    def __init__(self, caller_of: CallerOf) -> None:
        self._caller_of = caller_of

    def register(self, server: MCPServer, *, allow_delete: bool) -> None:
        """Add the tools to ``server``; the deleting ones only with ``allow_delete``."""
        reads: list[Callable[..., Any]] = [
            self.list_conversations,
            self.get_messages,
            self.search_messages,
            self.get_context_window,
        ]
        writes: list[Callable[..., Any]] = [
            self.create_conversation,
            self.add_message,
            self.rename_conversation,
        ]
        deletes: list[Callable[..., Any]] = [self.delete_conversation, self.clear_conversation]
        groups = [(reads, READ_ONLY), (writes, WRITES)]
        if allow_delete:
            groups.append((deletes, DELETES))
        for tools, hints in groups:
            for tool in tools:
                server.add_tool(tool, annotations=hints)

    async def list_conversations(
        self,
        ctx: Context,
        limit: Limit = 20,
        cursor: Cursor = None,
        archived: Annotated[
            Filter, Field(description="true: only archived ones; false: none of them; any: all.")
        ] = False,
        pinned: Annotated[
            Filter, Field(description="true: only pinned ones; false: no pinned ones; any: all.")
        ] = "any",
    ) -> Page[ConversationRead]:
        """List the user's conversations, most recently updated first (id, title, counts)."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            return await caller.store.list_conversations(
                caller.user_id, limit=limit, cursor=cursor, archived=archived, pinned=pinned
            )

    async def get_messages(
        self,
        ctx: Context,
        conversation_id: ConversationId,
        limit: Limit = 50,
        order: Annotated[
            Order, Field(description="asc: oldest first; desc: newest first.")
        ] = "asc",
        cursor: Cursor = None,
    ) -> MessagePage:
        """Read a page of a conversation's messages in order (OpenAI chat format plus id, seq,
        created_at)."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            return await _halved(caller.store).list_messages(
                caller.user_id, conversation_id, limit=limit, order=order, cursor=cursor
            )

    async def search_messages(
        self,
        ctx: Context,
        query: Annotated[
            str,
            Field(
                description='Words that must all occur (whole words, any case); "a phrase" in '
                "order; -word excludes; a OR b matches either."
            ),
        ],
        conversation_id: Annotated[
            uuid.UUID | None, Field(description="Only this conversation's messages.")
        ] = None,
        role: Annotated[Role | None, Field(description="Only messages of this role.")] = None,
        limit: Limit = 20,
        cursor: Cursor = None,
    ) -> SearchPage:
        """Search the text of the user's messages, newest first; each hit has the message, its
        conversation's id and title, and a snippet with the matches in <mark>...</mark>."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            return await _halved(caller.store).search_messages(
                caller.user_id,
                query,
                conversation_id=conversation_id,
                role=role,
                limit=limit,
                cursor=cursor,
            )

    async def get_context_window(
        self,
        ctx: Context,
        conversation_id: ConversationId,
        max_tokens: Annotated[int, Field(ge=1, description="The token budget.")],
        model: Annotated[
            str | None, Field(description="Count tokens with this model's tokenizer.")
        ] = None,
    ) -> ContextWindow:
        """The conversation's messages to send to an LLM within max_tokens: the leading system
        messages, then the newest messages that fit, oldest first, tool calls kept with their
        results."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            return await _halved(caller.store).get_context_window(
                caller.user_id, conversation_id, max_tokens, model
            )

    async def create_conversation(
        self,
        ctx: Context,
        title: Annotated[str | None, Field(description="A short title.")] = None,
        metadata: Annotated[
            dict[str, str] | None, Field(description="String keys and values, up to 16.")
        ] = None,
        archived: bool = False,
        pinned: bool = False,
        expires_at: Annotated[
            datetime | None,
            Field(description="A future instant with a time zone: temporary until then."),
        ] = None,
    ) -> ConversationRead:
        """Create a new, empty conversation for the user."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            return await caller.store.create_conversation(
                caller.user_id,
                title=title,
                metadata=metadata,
                archived=archived,
                pinned=pinned,
                expires_at=expires_at,
            )

    async def add_message(
        self,
        ctx: Context,
        conversation_id: ConversationId,
        role: Role,
        content: Annotated[
            str | list[dict[str, Any]] | None,
            DocumentedAs(MessageContent),
            Field(description="Text, or OpenAI content parts; null with tool_calls."),
        ] = None,
        name: str | None = None,
        tool_calls: Annotated[
            list[dict[str, Any]] | None,
            DocumentedAs(list[ChatToolCall] | None),
            Field(description="An assistant message's OpenAI tool calls."),
        ] = None,
        tool_call_id: Annotated[
            str | None, Field(description="The call a tool message answers.")
        ] = None,
        metadata: Annotated[
            dict[str, str] | None, Field(description="String keys and values, up to 16.")
        ] = None,
    ) -> MessageRead:
        """Append a message to the end of a conversation; the store assigns its seq."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            return await caller.store.add_message(
                caller.user_id,
                conversation_id,
                role,
                content,
                name=name,
                tool_calls=tool_calls,
                tool_call_id=tool_call_id,
                metadata=metadata,
            )

    async def rename_conversation(
        self,
        ctx: Context,
        conversation_id: ConversationId,
        title: Annotated[str | None, Field(description="The new title; null clears it.")],
    ) -> ConversationRead:
        """Change a conversation's title."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            return await caller.store.update_conversation(
                caller.user_id, conversation_id, title=title
            )

    async def delete_conversation(
        self, ctx: Context, conversation_id: ConversationId
    ) -> ConversationDeleted:
        """Delete a conversation and all of its messages, for good."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            await caller.store.delete_conversation(caller.user_id, conversation_id)
        return ConversationDeleted(id=conversation_id)

    async def clear_conversation(
        self, ctx: Context, conversation_id: ConversationId
    ) -> ConversationCleared:
        """Delete every message of a conversation, for good, keeping the conversation."""
        caller = self._caller_of(ctx)
        async with _tool_errors():
            count = await caller.store.clear_conversation(caller.user_id, conversation_id)
        return ConversationCleared(id=conversation_id, messages_deleted=count)


def _halved(store: ChatHistory) -> ChatHistory:
    """The store with half its byte budget, for results sent twice (see :class:`HistoryServer`)."""
    return store.with_response_budget(store.max_response_bytes // 2)


def as_text(result: dict[str, Any]) -> str:
    """The text content of a tool's result: its structured content as compact JSON, for
    clients that read only text (the OpenAI Agents SDK by default, as MCP suggests)."""
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"))


class HistoryServer(MCPServer[Any]):
    """The SDK's server, with each tool result's text content as compact JSON.

    A result is sent twice, as MCP 2025-06-18 suggests: as ``structuredContent`` (checked
    against the tool's output schema) and as its JSON text, for clients that read only text.
    The SDK indents that text; compact, it is no larger than the structured content, and the
    tools that return message content read within half the store's byte budget (:func:`_halved`),
    so the two together stay within ``max_response_bytes``."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        result = await super().call_tool(name, arguments, context)
        if isinstance(result, CallToolResult) and result.structured_content is not None:
            text = TextContent(type="text", text=as_text(result.structured_content))
            return result.model_copy(update={"content": [text]})
        return result


def build_server(caller_of: CallerOf, *, allow_delete: bool = False) -> MCPServer:
    """An MCP server whose tools act for ``caller_of(ctx)``; deleting tools with
    ``allow_delete``."""
    # The SDK configures the root logger when the root has no handler (logging.basicConfig):
    # WARNING keeps what reaches the terminal what Python shows without any configuration.
    server: MCPServer = HistoryServer(
        "chathistory", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    HistoryTools(caller_of).register(server, allow_delete=allow_delete)
    return server


__all__ = [
    "Caller",
    "CallerOf",
    "ConversationCleared",
    "ConversationDeleted",
    "HistoryServer",
    "HistoryTools",
    "as_text",
    "build_server",
]
