"""Token counts: exact with the BPE extra, a documented over-estimate without it."""

from __future__ import annotations

import pytest

from chathistory import tokens
from chathistory.tokens import TokenCounter, encoding_for_model, estimate

SAMPLES = [
    "Hello, world! How are you today?",
    "漢字かなカナ한국어 " * 20,
    "مرحبا بالعالم " * 10,
    "emoji 👩‍👩‍👧‍👦🇫🇷🤖 " * 10,
    "def f(x):\n    return {'a': [1, 2, 3]}\n" * 10,
    "1234567890" * 30,
]


def test_bpe_counts_match_known_values() -> None:
    o200k = TokenCounter("o200k_base")
    assert o200k.exact
    assert o200k.count_text("hello world") == 2
    assert o200k.count_text("") == 0
    message = {"role": "user", "content": "hello world"}
    assert o200k.count_message(message) == 3 + 1 + 2
    assert o200k.count_message({**message, "name": "ann"}) == 3 + 1 + 2 + 1 + 1
    assert o200k.count_messages([message]) == tokens.REPLY_PRIMING + 6


@pytest.mark.parametrize("text", SAMPLES)
def test_estimate_is_conservative(text: str) -> None:
    for encoding in ("o200k_base", "cl100k_base"):
        assert estimate(text) >= TokenCounter(encoding).count_text(text)


def test_fallback_without_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_load", lambda encoding: None)
    fallback = TokenCounter("o200k_base")
    assert not fallback.exact
    assert fallback.count_text("abcd") == 2
    assert fallback.count_text("漢") == 3  # 3 UTF-8 bytes
    assert fallback.count_text("a, b") == 3


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("o3-mini", "o200k_base"),
        ("gpt-5-nano", "o200k_base"),
        ("openai/gpt-4.1", "o200k_base"),
        ("some-local-model", "o200k_base"),
    ],
)
def test_model_encodings(model: str, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


def test_unknown_encoding() -> None:
    with pytest.raises(ValueError):
        TokenCounter("no_such_base")
