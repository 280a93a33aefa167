"""Search's words, queries and snippets: pure functions, the same on every backend.

Text is cut into words here, in Python, for the index and for the query alike, so SQLite and
PostgreSQL find exactly the same messages:

- a word is a run of letters, digits and combining marks, lowercased; everything else
  (punctuation, symbols, ``_``, spaces) separates words. No stemming, no prefixes;
- scripts written without spaces between words (Han, Hiragana, Katakana, Thai, Lao, Khmer,
  Myanmar) are cut into single characters, and a query word in them is the phrase of its
  characters: ``東京`` finds every text containing ``東京``, whatever the words around it;
- a word longer than :data:`MAX_WORD_CHARS` is cut to that length (in the index and in queries).

The index holds the words in order (``"w1 w2 w3"``); PostgreSQL as a ``tsvector`` with their
positions (positions past 16,383 count as 16,383, as PostgreSQL stores them), SQLite as FTS5's
``ascii``-tokenised text.

Query language: words must all occur (AND); ``"a phrase"`` matches its words adjacent, in order;
``-word`` or ``-"a phrase"`` excludes; ``a OR b`` (``OR`` in capitals) matches either and binds
tighter than the implicit AND (``a b OR c`` is ``a AND (b OR c)``). A bare term that holds
punctuation (``e-mail``) is the phrase of its words.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from chathistory.errors import FieldError, ValidationError

MAX_WORD_CHARS: Final = 100
MAX_QUERY_CHARS: Final = 1000
MAX_QUERY_WORDS: Final = 32
SNIPPET_WORDS_BEFORE: Final = 8
SNIPPET_MAX_CHARS: Final = 200

# Scripts without spaces between words: one character, one word.
_UNSPACED = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff\u31f0-\u31ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\U00020000-\U0003134f"  # Han, supplementary
)


@cache
def _word_pattern() -> re.Pattern[str]:
    marks = "".join(
        re.escape(chr(c)) for c in range(0x30000) if unicodedata.category(chr(c))[0] == "M"
    )
    return re.compile(rf"([{_UNSPACED}])|(?:(?![{_UNSPACED}])(?:[^\W_]|[{marks}]))+")


# ASCII text (most of it, in most chats) has no marks and no unspaced scripts: its words are
# the runs of letters and digits, found fifteen times faster than with the general pattern.
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


def words(text: str) -> list[str]:
    """The words of ``text``, lowercased, in order."""
    if text.isascii():
        return [word[:MAX_WORD_CHARS] for word in _ASCII_WORD.findall(text.lower())]
    return [word for word, _, _ in _spans(text)]


def _spans(text: str) -> Iterator[tuple[str, int, int]]:
    pattern = _ASCII_WORD if text.isascii() else _word_pattern()
    for match in pattern.finditer(text):
        yield match[0].lower()[:MAX_WORD_CHARS], match.start(), match.end()


def searchable_text(content: Any, extras: dict[str, Any] | None) -> str | None:
    """What search reads of a message: string content, the text of text and refusal parts,
    an assistant's refusal."""
    pieces: list[str] = []
    if isinstance(content, str):
        pieces.append(content)
    elif isinstance(content, list):
        pieces += [
            part[kind]
            for part in content
            if isinstance(part, dict)
            and (kind := part.get("type")) in ("text", "refusal")
            and isinstance(part.get(kind), str)
        ]
    refusal = (extras or {}).get("refusal")
    if isinstance(refusal, str):
        pieces.append(refusal)
    text = "\n".join(piece for piece in pieces if piece)
    return text or None


def index_text(text: str) -> str:
    """The indexed form: the words joined by single spaces (SQLite's FTS5 column)."""
    return " ".join(words(text))


def tsvector_text(text: str) -> str:
    """The indexed form as PostgreSQL ``tsvector`` input: each word with its positions."""
    positions: dict[str, list[str]] = {}
    found = words(text)
    for n, word in enumerate(found[:_LAST_POSITION], start=1):
        at = positions.get(word)
        if at is None:
            positions[word] = [_POSITIONS[n]]
        else:
            at.append(_POSITIONS[n])
    for word in found[_LAST_POSITION:]:  # all at the last position PostgreSQL stores
        at = positions.setdefault(word, [])
        if not at or at[-1] != _POSITIONS[_LAST_POSITION]:
            at.append(_POSITIONS[_LAST_POSITION])
    # PostgreSQL keeps 256 positions a word. An ASCII text's words are letters and digits:
    # nothing in them to quote.
    quote = _ascii_quote if text.isascii() else _pg_quote
    return " ".join([f"{quote(word)}:{','.join(at[:256])}" for word, at in positions.items()])


_LAST_POSITION: Final = 16383
_POSITIONS: Final = tuple(str(n) for n in range(_LAST_POSITION + 1))  # a position as text


def _ascii_quote(word: str) -> str:
    return f"'{word}'"


# -- queries --------------------------------------------------------------------------------

Term = tuple[str, ...]  # one word, or a phrase's words in order


@dataclass(frozen=True, slots=True)
class Query:
    """All of ``groups`` (each: any of its terms), none of ``excluded``."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...]

    def matched_words(self) -> frozenset[str]:
        return frozenset(word for group in self.groups for term in group for word in term)

    def to_tsquery(self) -> str:
        """PostgreSQL ``tsquery`` input (cast, not parsed again: the words are already cut)."""
        parts = ["(" + " | ".join(_pg_term(term) for term in group) + ")" for group in self.groups]
        parts += ["!(" + _pg_term(term) + ")" for term in self.excluded]
        return " & ".join(parts)

    def to_loose_tsquery(self) -> str:
        """The words that must occur, as a ``tsquery`` the GIN index answers without looking
        at a row (no phrase, no exclusion): what :meth:`to_tsquery` then narrows."""
        return " & ".join(
            "(" + " | ".join(" & ".join(map(_pg_quote, term)) for term in group) + ")"
            for group in self.groups
        )

    def to_fts5(self) -> str:
        """An SQLite FTS5 query: quoted phrases only, so no word is read as syntax."""
        expression = " AND ".join(
            "(" + " OR ".join(_fts5_term(term) for term in group) + ")" for group in self.groups
        )
        for term in self.excluded:
            expression = f"({expression}) NOT {_fts5_term(term)}"
        return expression


def _pg_quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def _pg_term(term: Term) -> str:
    return " <-> ".join(map(_pg_quote, term))


def _fts5_term(term: Term) -> str:
    return '"' + " ".join(term).replace('"', '""') + '"'


def _invalid(message: str) -> ValidationError:
    return ValidationError([FieldError(("query", "q"), message, "invalid_query")])


_TOKEN = re.compile(r'\s+|(-?)"([^"]*)("?)|(\S+?)(?=\s|"|$)')


def parse_query(text: str) -> Query:
    """Parse the query language above; :class:`ValidationError` (422) on a query that cannot
    find anything or cannot be read."""
    if not isinstance(text, str) or not text.strip():
        raise _invalid("the query is empty: give at least one word to find")
    if len(text) > MAX_QUERY_CHARS:
        raise _invalid(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text):
        raise _invalid("the query holds a NUL character or a lone surrogate")
    # (exclude, term) or "OR", in order
    items: list[tuple[bool, Term] | str] = []
    for match in _TOKEN.finditer(text):
        negated, quoted, closing, bare = match[1], match[2], match[3], match[4]
        if quoted is not None:
            if not closing:
                raise _invalid('a quotation mark is not closed: end the phrase with "')
            term = tuple(words(quoted))
            if term:
                items.append((bool(negated), term))
        elif bare is not None:
            if bare == "OR":
                items.append("OR")
                continue
            exclude = bare.startswith("-")
            term = tuple(words(bare[1:] if exclude else bare))
            if term:
                items.append((exclude, term))
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    joining = False
    for position, item in enumerate(items):
        if item == "OR":
            previous = items[position - 1] if position else None
            following = items[position + 1] if position + 1 < len(items) else None
            if not isinstance(previous, tuple) or not isinstance(following, tuple):
                raise _invalid("OR needs a word or phrase on each side")
            if previous[0] or following[0]:
                raise _invalid("an excluded term cannot be one side of OR")
            joining = True
            continue
        assert isinstance(item, tuple)
        exclude, term = item
        if exclude:
            excluded.append(term)
        elif joining:
            groups[-1].append(term)
        else:
            groups.append([term])
        joining = False
    if not groups:
        raise _invalid(
            "the query has no word to find (punctuation is not searched; exclusions only "
            "narrow a search)"
        )
    count = sum(len(term) for group in groups for term in group) + sum(map(len, excluded))
    if count > MAX_QUERY_WORDS:
        raise _invalid(f"the query has {count} words; at most {MAX_QUERY_WORDS} are allowed")
    return Query(tuple(tuple(group) for group in groups), tuple(excluded))


# -- snippets -------------------------------------------------------------------------------


def snippet(text: str, matched: frozenset[str] | Sequence[str]) -> str:
    """A short excerpt of ``text`` around its first matched word, HTML-escaped, with every
    matched word in ``<mark>`` … ``</mark>``; ``…`` where the text was cut."""
    # Words are read up to the first match and past it only to the excerpt's end: the work
    # follows the excerpt, not the length of the text.
    spans: list[tuple[str, int, int]] = []
    first: int | None = None
    for span in _spans(text):
        spans.append(span)
        if first is None and span[0] in matched:
            first = len(spans) - 1
        if first is not None and span[1] > spans[first][1] + SNIPPET_MAX_CHARS:
            break
    first = first or 0
    if not spans:
        return html.escape(text[:SNIPPET_MAX_CHARS])
    start = spans[max(0, first - SNIPPET_WORDS_BEFORE)][1]
    if first - SNIPPET_WORDS_BEFORE <= 0:
        start = 0
    end = min(len(text), max(start + SNIPPET_MAX_CHARS, spans[first][2]))
    out: list[str] = ["…"] if start > 0 else []
    at = start
    for word, begin, stop in spans:
        if begin < start or stop > end:
            continue
        if word in matched:
            out.append(html.escape(text[at:begin]))
            out.append(f"<mark>{html.escape(text[begin:stop])}</mark>")
            at = stop
    out.append(html.escape(text[at:end]))
    if end < len(text):
        out.append("…")
    return "".join(out).replace("</mark><mark>", "")
