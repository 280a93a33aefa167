"""SQLite search per user: FTS5 terms that carry their user.

Before: FTS5 indexed ``message_search.words`` as they are (an external-content table over
``message_search``), one index for every user, so a search's index read (FTS5's matches of its
words) read every user's matches: a word with few hits of one user cost what the whole table's
hits of it cost (about 100 ms for a word in 500,000 of 1,000,000 messages), growing with the
other users' histories.

After: each word goes into FTS5 prefixed by its user, ``hex(user_id) || 'x' || word`` (``x`` is
never a hex digit, so a term names one user and one word), so a query for one user reads only
that user's posting lists, as PostgreSQL's GIN index over ``(user_id, words)`` does. The FTS5
table is contentless (``content=''``: its text is not ``message_search.words`` any longer) and
keeps no column sizes (no ranking is asked of it); the triggers on ``message_search`` write and
delete the prefixed text, computed from the row, so the store's writes are unchanged; rows
whose text has no word are not indexed (no word finds them). ``message_search`` itself is
unchanged. The upgrade builds the index again from ``message_search`` in one statement
(about 8 s per million messages measured, holding the write lock); the downgrade restores the
external-content table and its triggers of ``0004_message_search`` and rebuilds it from
``message_search``. Nothing is done on PostgreSQL.

Revision ID: 0011_sqlite_search
Revises: 0010_branch_bounds
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_sqlite_search"
down_revision: str | None = "0010_branch_bounds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The words of a row (``new``, ``old``, ``message_search``), each prefixed by its user:
# hex(user_id) || 'x' || words, with every ' ' between words followed by the same prefix.
_DROP = [
    "DROP TRIGGER message_search_insert",
    "DROP TRIGGER message_search_delete",
    "DROP TABLE message_search_fts",
]
_PER_USER = [
    "CREATE VIRTUAL TABLE message_search_fts USING fts5("
    "words, content='', columnsize=0, tokenize='ascii')",
    "CREATE TRIGGER message_search_insert AFTER INSERT ON message_search"
    " WHEN new.words <> '' BEGIN"
    " INSERT INTO message_search_fts (rowid, words) VALUES (new.search_rowid,"
    " hex(new.user_id) || 'x' || replace(new.words, ' ', ' ' || hex(new.user_id) || 'x'));"
    " END",
    "CREATE TRIGGER message_search_delete AFTER DELETE ON message_search"
    " WHEN old.words <> '' BEGIN"
    " INSERT INTO message_search_fts (message_search_fts, rowid, words) VALUES ('delete',"
    " old.search_rowid,"
    " hex(old.user_id) || 'x' || replace(old.words, ' ', ' ' || hex(old.user_id) || 'x'));"
    " END",
    "INSERT INTO message_search_fts (rowid, words) SELECT search_rowid,"
    " hex(user_id) || 'x' || replace(words, ' ', ' ' || hex(user_id) || 'x')"
    " FROM message_search WHERE words <> ''",
]
# As 0004_message_search created them.
_SHARED = [
    "CREATE VIRTUAL TABLE message_search_fts USING fts5("
    "words, content='message_search', content_rowid='search_rowid', tokenize='ascii')",
    "CREATE TRIGGER message_search_insert AFTER INSERT ON message_search BEGIN"
    " INSERT INTO message_search_fts (rowid, words) VALUES (new.search_rowid, new.words); END",
    "CREATE TRIGGER message_search_delete AFTER DELETE ON message_search BEGIN"
    " INSERT INTO message_search_fts (message_search_fts, rowid, words)"
    " VALUES ('delete', old.search_rowid, old.words); END",
    "INSERT INTO message_search_fts (message_search_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _DROP + _PER_USER:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _DROP + _SHARED:
            op.execute(statement)
