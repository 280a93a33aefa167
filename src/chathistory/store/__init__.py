"""The store: :class:`ChatHistory`, a facade over rooms that each own one concern.

- ``facade``: ``ChatHistory``, the one public entry; each call's transaction, no rules.
- ``conversations``: create, find, list (keyset), update, delete, clear, erase a user.
- ``appending``: parse a batch, then lock and number, idempotency, titling, insert.
- ``tool_pairing``: tool results answer open calls (``open_tool_calls``), O(batch).
- ``reading``: one message, pages by ``seq``, the newest messages (the hot read).
- ``context``: the context window; choosing (``Budget``, ``Selection``) is pure.
- ``transfer``: export in one snapshot, import a conversation whole.
- ``purging``: delete expired and old conversations in short batches (SPEC 9).
- ``limits``: byte budgets of reads; ``sql``: PostgreSQL's hand-written statements;
  ``database``: transactions, the raw connection, failures as ``UnavailableError``;
  ``rows``: rows to read models, shared small rules.
"""

from chathistory.store.facade import (
    DEFAULT_MAX_BATCH_MESSAGES,
    DEFAULT_MAX_CONTENT_CHARS,
    DEFAULT_MAX_RESPONSE_BYTES,
    UNSET,
    ChatHistory,
)
from chathistory.store.reading import Order
from chathistory.store.rows import MAX_PAGE

__all__ = [
    "DEFAULT_MAX_BATCH_MESSAGES",
    "DEFAULT_MAX_CONTENT_CHARS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MAX_PAGE",
    "UNSET",
    "ChatHistory",
    "Order",
]
