"""Token counts: exact with the BPE extra, a documented over-estimate without it."""

from __future__ import annotations

import pytest

from chathistory import ChatHistory, tokens
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


# Models whose encodings bpe-openai knows but ships no tables for (it needs tiktoken for them):
# they count with the documented estimate, never an error (red-team report, issue 9 item 3).
LEGACY_MODELS = [
    ("gpt2", "gpt2"),
    ("davinci", "r50k_base"),
    ("text-davinci-003", "p50k_base"),
    ("code-davinci-002", "p50k_base"),
]


@pytest.mark.parametrize(("model", "encoding"), LEGACY_MODELS)
def test_model_without_installed_tables_counts_with_the_estimate(model: str, encoding: str) -> None:
    legacy = TokenCounter.for_model(model)
    assert legacy.encoding == encoding
    assert not legacy.exact
    assert legacy.count_text("hello world") == estimate("hello world")
    assert TokenCounter(encoding).count_text("a, b") == 3


def test_unknown_encoding_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="o200k_base"):
        TokenCounter("no_such_base")


@pytest.mark.parametrize(
    "model", [m for m, _ in LEGACY_MODELS] + ["some-local-model", "claude-3-5-sonnet"]
)
async def test_store_context_window_for_any_model(
    store: ChatHistory, user: str, model: str
) -> None:
    conv = await store.create_conversation(user)
    await store.add_messages(
        user,
        conv.id,
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello world " * 50},
            {"role": "assistant", "content": "hi"},
        ],
    )
    window = await store.get_context_window(user, conv.id, 60, model=model)
    counter = TokenCounter.for_model(model)
    assert window.encoding == counter.encoding
    assert window.exact is counter.exact
    kept = window.messages
    assert [m["role"] for m in kept] == ["system", "assistant"]  # the long one does not fit
    assert window.truncated
    assert window.token_count == counter.count_messages(kept) <= 60
