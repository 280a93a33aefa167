"""Search (SPEC 8) on every backend: one table of queries by texts that SQLite, PostgreSQL,
PgBouncer and Citus must all answer alike; isolation, filters, pages, snippets, bad input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from chathistory import ChatHistory
from chathistory.cli import app
from chathistory.errors import ConversationNotFoundError, InvalidCursorError, ValidationError
from chathistory.store import search_syntax
from tests.fixtures.http import asgi_client

TEXTS = [
    "The quick brown fox jumps over the lazy dog",  # 0
    "Foxes run; a fox? No: FOX!",  # 1
    "fox brown, never brown fox... well: brown-fox",  # 2
    "Send me an e-mail about the snake_case names",  # 3
    "Café au lait, s'il vous plaît",  # 4
    "हिन्दी में लिखा हुआ पाठ",  # 5
    "明日は東京タワーに行きます",  # 6
    "a cat and a dog",  # 7
    "email without a hyphen",  # 8
]

# query -> the TEXTS it finds
QUERIES: dict[str, set[int]] = {
    "fox": {0, 1, 2},
    "FOX": {0, 1, 2},
    "foxes": {1},
    '"brown fox"': {0, 2},
    '"fox brown"': {2},
    '"quick fox"': set(),
    "fox -dog": {1, 2},
    'fox -"brown fox"': {1},
    "cat OR fox": {0, 1, 2, 7},
    "dog cat OR fox": {0, 7},
    "e-mail": {3},
    "email": {8},
    "snake": {3},
    "case": {3},
    "café": {4},
    "cafe": set(),
    "plaît": {4},
    "हिन्दी": {5},
    "लिखा": {5},
    "東京": {6},
    "京タワ": {6},
    "大阪": set(),
    "the": {0, 3},
    "jump": set(),
}


async def _texts(store: ChatHistory, user: str) -> tuple[uuid.UUID, list[uuid.UUID]]:
    conv = await store.create_conversation(user, title="Searchable")
    ids = []
    for text in TEXTS:
        ids.append((await store.add_message(user, conv.id, "user", text)).id)
    return conv.id, ids


async def test_queries_find_the_same_texts_on_every_backend(store: ChatHistory, user: str) -> None:
    _, ids = await _texts(store, user)
    for query, expected in QUERIES.items():
        page = await store.search_messages(user, query, limit=100)
        found = {ids.index(hit.message.id) for hit in page.data}
        assert found == expected, query


async def test_hits_carry_the_message_its_conversation_and_a_safe_snippet(
    store: ChatHistory, user: str
) -> None:
    conv = await store.create_conversation(user, title="HTML <talk>")
    stored = await store.add_message(user, conv.id, "user", "<b>fox</b> & hound, fox again")
    page = await store.search_messages(user, "fox")
    (hit,) = page.data
    assert hit.message == stored
    assert (hit.conversation.id, hit.conversation.title) == (conv.id, "HTML <talk>")
    assert hit.snippet == "&lt;b&gt;<mark>fox</mark>&lt;/b&gt; &amp; hound, <mark>fox</mark> again"
    assert hit.model_dump(mode="json")["object"] == "search.hit"
    long = " ".join(f"w{n}" for n in range(300)) + " needle " + " ".join(["x"] * 300)
    await store.add_message(user, conv.id, "user", long)
    snippet = (await store.search_messages(user, "needle")).data[0].snippet
    assert snippet.startswith("…w292 ") and "<mark>needle</mark>" in snippet
    assert snippet.endswith("…") and len(snippet) < 260


async def test_text_parts_and_refusals_are_searched_tool_arguments_are_not(
    store: ChatHistory, user: str
) -> None:
    conv = await store.create_conversation(user)
    parts = [{"type": "text", "text": "look at this zebra"}, {"type": "text", "text": "stripes"}]
    await store.add_message(user, conv.id, "user", parts)
    await store.add_messages(
        user,
        conv.id,
        [{"role": "assistant", "content": None, "refusal": "I cannot discuss giraffes"}],
    )
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q": 1}'}}
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call])
    await store.add_message(user, conv.id, "tool", "okapi result", tool_call_id="c1")
    assert [h.message.role for h in (await store.search_messages(user, "zebra")).data] == ["user"]
    # Parts read as one text, a line break apart: a phrase may run from one into the next.
    assert len((await store.search_messages(user, '"zebra stripes"')).data) == 1
    assert len((await store.search_messages(user, "stripes")).data) == 1
    refused = (await store.search_messages(user, "giraffes")).data
    assert [h.message.refusal for h in refused] == ["I cannot discuss giraffes"]
    assert (await store.search_messages(user, "okapi")).data[0].message.role == "tool"
    assert (await store.search_messages(user, "function")).data == []


async def test_only_the_users_own_live_messages(
    store: ChatHistory, user: str, other_user: str
) -> None:
    mine = await store.create_conversation(user)
    theirs = await store.create_conversation(other_user)
    await store.add_message(user, mine.id, "user", "platypus mine")
    await store.add_message(other_user, theirs.id, "user", "platypus theirs")
    assert [h.snippet for h in (await store.search_messages(user, "platypus")).data] == [
        "<mark>platypus</mark> mine"
    ]
    with pytest.raises(ConversationNotFoundError):
        await store.search_messages(user, "platypus", conversation_id=theirs.id)
    await store.clear_conversation(user, mine.id)
    assert (await store.search_messages(user, "platypus")).data == []
    again = await store.create_conversation(user)
    await store.add_message(user, again.id, "user", "platypus again")
    await store.delete_conversation(user, again.id)
    assert (await store.search_messages(user, "platypus")).data == []
    await store.delete_user_data(other_user)
    assert (await store.search_messages(other_user, "platypus")).data == []


async def test_filters_and_keyset_pages_newest_first(store: ChatHistory, user: str) -> None:
    first = await store.create_conversation(user)
    second = await store.create_conversation(user)
    written = []
    for n in range(25):
        conv = first if n % 2 else second
        role = "assistant" if n % 3 == 0 else "user"
        written.append(await store.add_message(user, conv.id, role, f"walrus number {n}"))
    expected = sorted(written, key=lambda m: (m.created_at, m.id), reverse=True)
    seen: list[Any] = []
    cursor = None
    while True:
        page = await store.search_messages(user, "walrus", limit=10, cursor=cursor)
        seen += [hit.message for hit in page.data]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == expected
    in_first = await store.search_messages(user, "walrus", conversation_id=first.id, limit=100)
    assert {h.message.id for h in in_first.data} == {m.id for m in written[1::2]}
    assistant = await store.search_messages(user, "walrus", role="assistant", limit=100)
    assert {h.message.id for h in assistant.data} == {m.id for m in written[::3]}
    assert (await store.search_messages(user, "walrus 7")).data[0].message.id == written[7].id


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "-fox",
        '-"a phrase"',
        "!!! ???",
        '"unbalanced',
        "OR",
        "fox OR",
        "OR fox",
        "fox OR -dog",
        " ".join(f"w{n}" for n in range(1000))[:999],
        "x" * 1001,
        "fox\x00",
        "fox \ud800",
    ],
)
async def test_bad_queries_are_validation_errors(store: ChatHistory, user: str, query: str) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.search_messages(user, query)
    assert caught.value.errors[0].loc == ("query", "q")


async def test_bad_paging_and_filters_are_validation_errors(store: ChatHistory, user: str) -> None:
    for bad in (0, 101):
        with pytest.raises(ValidationError):
            await store.search_messages(user, "fox", limit=bad)
    with pytest.raises(ValidationError):
        await store.search_messages(user, "fox", role="robot")
    with pytest.raises(InvalidCursorError):
        await store.search_messages(user, "fox", cursor="not-a-cursor")
    conversation_cursor = (await store.list_conversations(user)).next_cursor
    if conversation_cursor is not None:
        with pytest.raises(InvalidCursorError):
            await store.search_messages(user, "fox", cursor=conversation_cursor)


def test_words_and_queries() -> None:
    assert search_syntax.words("Hello, World! snake_case e-mail") == [
        "hello",
        "world",
        "snake",
        "case",
        "e",
        "mail",
    ]
    assert search_syntax.words("東京タワー") == ["東", "京", "タ", "ワ", "ー"]
    assert search_syntax.words("हिन्दी") == ["हिन्दी"]  # combining marks stay in the word
    assert len(search_syntax.words("y" * 500)[0]) == search_syntax.MAX_WORD_CHARS
    query = search_syntax.parse_query('a "b c" OR d -e')
    assert query.groups == ((("a",),), (("b", "c"), ("d",)))
    assert query.excluded == (("e",),)
    assert query.to_tsquery() == "('a') & ('b' <-> 'c' | 'd') & !('e')"
    assert query.to_fts5() == '(("a") AND ("b c" OR "d")) NOT "e"'
    assert search_syntax.parse_query("it's").to_tsquery() == "('it' <-> 's')"


def test_cli_search_table_and_json_lines(backend_url: str, user: str) -> None:
    import asyncio

    async def seed() -> None:
        async with ChatHistory.open(backend_url, migrate=False) as store:
            conv = await store.create_conversation(user, title="Lisbon trip")
            for n in range(3):
                await store.add_message(user, conv.id, "user", f"pastel de nata number {n}")

    asyncio.run(seed())
    runner = CliRunner()
    base = ["search", "--database-url", backend_url, "--user", user]
    answer = runner.invoke(app, [*base, "nata", "--json", "--limit", "2"])
    assert answer.exit_code == 0, answer.output
    lines = [json.loads(line) for line in answer.output.splitlines()]
    assert [line["object"] for line in lines] == ["search.hit", "search.hit", "list.end"]
    assert lines[0]["snippet"] == "pastel de <mark>nata</mark> number 2"
    assert lines[-1]["has_more"] is True
    rest = runner.invoke(app, [*base, "nata", "--json", "--cursor", lines[-1]["next_cursor"]])
    assert [json.loads(line)["object"] for line in rest.output.splitlines()] == [
        "search.hit",
        "list.end",
    ]
    table = runner.invoke(app, [*base, "nata"])
    assert table.exit_code == 0
    assert "Lisbon trip" in table.output and "pastel de nata number 1" in table.output
    bad = runner.invoke(app, [*base, '"nata'])
    assert bad.exit_code == 1 and "quotation mark is not closed" in bad.output


async def test_http_search(store: ChatHistory, user: str, other_user: str) -> None:

    from chathistory.http import create_app
    from tests.support.api import bearer, locs, problem, settings

    app = create_app(settings(), store=store)
    async with asgi_client(app) as http:
        conv = await store.create_conversation(user, title="Trip")
        for n in range(3):
            await store.add_message(user, conv.id, "user", f"Lisbon <tram> {n}")
        path = f"/api/{user}/search"
        page = await http.get(path, params={"q": "lisbon", "limit": 2}, headers=bearer(user))
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["object"] == "list" and body["has_more"] is True
        hit = body["data"][0]
        assert hit["object"] == "search.hit"
        assert hit["message"]["content"] == "Lisbon <tram> 2"
        assert hit["conversation"] == {"id": str(conv.id), "title": "Trip"}
        assert hit["snippet"] == "<mark>Lisbon</mark> &lt;tram&gt; 2"
        rest = await http.get(
            path, params={"q": "lisbon", "cursor": body["next_cursor"]}, headers=bearer(user)
        )
        assert [h["message"]["content"] for h in rest.json()["data"]] == ["Lisbon <tram> 0"]
        filtered = await http.get(
            path,
            params={"q": "lisbon", "conversation_id": str(conv.id), "role": "assistant"},
            headers=bearer(user),
        )
        assert filtered.json()["data"] == []

        problem(await http.get(path, params={"q": "lisbon"}, headers=bearer(other_user)), 403)
        problem(await http.get(path, params={"q": "lisbon"}), 401)
        for bad in ({"q": ""}, {"q": '"open'}, {"q": "-only"}, {}, {"q": "x", "limit": 0}):
            answer = problem(await http.get(path, params=bad, headers=bearer(user)), 422)
            assert locs(answer)[0][0] == "query"
        problem(await http.get(path, params={"q": "x", "role": "robot"}, headers=bearer(user)), 422)
        problem(
            await http.get(path, params={"q": "x", "cursor": "nope"}, headers=bearer(user)),
            400,
            "invalid_cursor",
        )
        elsewhere = str(uuid.uuid4())
        problem(
            await http.get(
                path, params={"q": "x", "conversation_id": elsewhere}, headers=bearer(user)
            ),
            404,
        )
        schema = (await http.get("/openapi.json")).json()
        operation = schema["paths"]["/api/{user_id}/search"]["get"]
        assert operation["operationId"] == "searchMessages"
