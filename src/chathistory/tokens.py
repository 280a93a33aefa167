"""Token counting: a real BPE tokenizer when installed (extra ``tokens``), an estimate otherwise.

Counts follow OpenAI's chat format: every message costs its text plus a fixed overhead
(``<|start|>role ... <|end|>``, 3 tokens, and 1 more when it carries a ``name``), and a reply is
primed with 3 more tokens. With the ``bpe-openai`` package installed (its tables ship inside it,
so it works offline) counts are exact for the encoding; without it, :func:`estimate` gives an
upper estimate (ASCII letters, digits and spaces two to a token, anything else a token per byte).

A model never makes counting fail: a name no table knows counts with :data:`DEFAULT_ENCODING`,
and a known encoding whose tables are not installed (``gpt2``, ``r50k_base``, ``p50k_base``:
``bpe-openai`` needs ``tiktoken`` for those) counts with the estimate (``exact`` is ``False``).
Only an encoding name that no tokenizer knows at all is a :class:`ValueError`.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_ENCODING = "o200k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

# Model name prefixes and their encodings, newest families first (for names the tokenizer
# package does not know, and for when it is not installed).
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-5", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada", "cl100k_base"),
)


_PAIRABLE = re.compile(r"[A-Za-z0-9 ]")
_ASCII_OTHER = re.compile(r"[\x00-\x1f!-/:-@\[-`{-\x7f]")


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


class TokenCounter:
    """Counts tokens of texts and chat messages for one encoding."""

    def __init__(self, encoding: str = DEFAULT_ENCODING) -> None:
        self.encoding = encoding
        self._encoder = _load(encoding)

    @property
    def exact(self) -> bool:
        """Whether a real BPE tokenizer counts (``False``: the documented estimate)."""
        return self._encoder is not None

    @classmethod
    def for_model(cls, model: str) -> TokenCounter:
        return counter(encoding_for_model(model))

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        if self._encoder is not None:
            return len(self._encoder.encode_ordinary(text))
        return estimate(text)

    def count_message(self, message: Mapping[str, Any]) -> int:
        """Tokens one message costs in a prompt, overhead included."""
        from chathistory.schemas import content_text

        total = TOKENS_PER_MESSAGE + self.count_text(str(message.get("role", "")))
        total += self.count_text(content_text(message.get("content")))
        if message.get("name"):
            total += TOKENS_PER_NAME + self.count_text(message["name"])
        for call in message.get("tool_calls") or ():
            function = call.get("function") or call.get("custom") or {}
            total += TOKENS_PER_MESSAGE + self.count_text(str(call.get("id", "")))
            total += self.count_text(str(function.get("name", "")))
            total += self.count_text(str(function.get("arguments", function.get("input", ""))))
        extras = message.get("extras") or {}
        total += self.count_text(str(extras.get("refusal") or ""))
        total += self.count_text(str((extras.get("audio") or {}).get("transcript") or ""))
        if extras.get("function_call"):
            total += self.count_text(str(extras["function_call"].get("name", "")))
            total += self.count_text(str(extras["function_call"].get("arguments", "")))
        if message.get("tool_call_id"):
            total += self.count_text(message["tool_call_id"])
        return total

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Tokens of a whole prompt: every message, plus the reply's priming."""
        return REPLY_PRIMING + sum(self.count_message(m) for m in messages)


def estimate(text: str) -> int:
    """The fallback count, an upper estimate: ASCII letters, digits and spaces two to a token,
    every other ASCII character one token, every other character one token per UTF-8 byte
    (a byte-level BPE token always covers at least one byte)."""
    pairs = len(_PAIRABLE.findall(text))
    ascii_other = len(_ASCII_OTHER.findall(text))
    wide = len(text.encode("utf-8", "surrogatepass")) - pairs - ascii_other
    return math.ceil(pairs / 2) + ascii_other + wide


def encoding_for_model(model: str) -> str:
    """The encoding of an OpenAI model name (``gpt-4o-mini`` -> ``o200k_base``)."""
    try:
        import bpe_openai

        encoding = str(bpe_openai.encoding_name_for_model(model))
        if encoding in bpe_openai.list_encoding_names():
            return encoding
    except ImportError:
        pass  # no tokenizer installed: the table below
    except (KeyError, ValueError, LookupError):
        pass  # a model the tokenizer package does not know: the table below
    name = model.lower().rsplit("/", 1)[-1]
    for prefix, encoding in _MODEL_PREFIXES:
        if name.startswith(prefix):
            return encoding
    return DEFAULT_ENCODING


@functools.cache
def counter(encoding: str = DEFAULT_ENCODING) -> TokenCounter:
    """A shared counter per encoding (tokenizer tables load once per process)."""
    return TokenCounter(encoding)


def _load(encoding: str) -> _Encoder | None:
    """The tokenizer of ``encoding``; ``None`` (the estimate) when its tables are not
    installed. An encoding no tokenizer knows is a :class:`ValueError`."""
    try:
        import bpe_openai
    except ImportError:
        return None
    known = bpe_openai.list_encoding_names()
    if encoding not in known:
        raise ValueError(
            f"unknown token encoding {encoding!r}; known encodings: {', '.join(known)}"
        )
    try:
        encoder: _Encoder = bpe_openai.get_encoding(encoding)
    except Exception as exc:  # any failure to load the tables means: the estimate
        # bpe-openai knows gpt2 / r50k_base / p50k_base but ships no tables for them (it needs
        # tiktoken): count those with the documented estimate rather than fail the request.
        log.warning("no tokenizer tables for %s (%s): counting with the estimate", encoding, exc)
        return None
    return encoder
