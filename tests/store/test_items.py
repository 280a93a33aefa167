"""Items (SPEC 15) on every backend: OpenAI's item format stored whole, read back JSON-equal in
one history with the messages appended the chat way; the chat views stay valid OpenAI chat."""

from __future__ import annotations

import uuid
from typing import Any

import pydantic
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import (
    ResponseCodeInterpreterToolCall,
    ResponseComputerToolCall,
    ResponseCustomToolCall,
    ResponseFileSearchToolCall,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseOutputMessage,
    ResponseReasoningItem,
)
from openai.types.responses.response_input_item import (
    FunctionCallOutput,
    LocalShellCallOutput,
    McpApprovalResponse,
)
from openai.types.responses.response_output_item import (
    ImageGenerationCall,
    LocalShellCall,
    McpApprovalRequest,
    McpCall,
    McpListTools,
)

from chathistory import (
    ChatHistory,
    ConflictError,
    ItemNotFoundError,
    MessageNotFoundError,
    ValidationError,
)

CHAT = pydantic.TypeAdapter(list[ChatCompletionMessageParam])


def _dump(model: pydantic.BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def every_kind() -> list[dict[str, Any]]:
    """One item of each kind SPEC 15 lists, built with the openai SDK's own types, and one of a
    type the store does not know."""
    call = ResponseFunctionToolCall(
        type="function_call", id="fc_w", call_id="call_w", name="weather", arguments='{"c":"P"}'
    )
    return [
        {"role": "user", "content": "Weather in Paris?"},  # the short form
        _dump(
            ResponseReasoningItem.model_validate(
                {
                    "id": "rs_1",
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": "need the weather"}],
                    "encrypted_content": "gAAAA-opaque",
                }
            )
        ),
        _dump(call),
        _dump(FunctionCallOutput(type="function_call_output", call_id="call_w", output="sunny")),
        _dump(
            ResponseFunctionWebSearch.model_validate(
                {
                    "id": "ws_1",
                    "type": "web_search_call",
                    "status": "completed",
                    "action": {"type": "search", "query": "paris weather"},
                }
            )
        ),
        _dump(
            ResponseFileSearchToolCall.model_validate(
                {
                    "id": "fs_1",
                    "type": "file_search_call",
                    "status": "completed",
                    "queries": ["q"],
                    "results": None,
                }
            )
        ),
        _dump(
            ResponseCodeInterpreterToolCall.model_validate(
                {
                    "id": "ci_1",
                    "type": "code_interpreter_call",
                    "status": "completed",
                    "code": "print(1)",
                    "container_id": "cntr_1",
                    "outputs": [{"type": "logs", "logs": "1"}],
                }
            )
        ),
        _dump(
            ImageGenerationCall.model_validate(
                {
                    "id": "ig_1",
                    "type": "image_generation_call",
                    "status": "completed",
                    "result": "b64",
                }
            )
        ),
        _dump(
            ResponseComputerToolCall.model_validate(
                {
                    "id": "cu_1",
                    "type": "computer_call",
                    "call_id": "cc_1",
                    "status": "completed",
                    "pending_safety_checks": [],
                    "action": {"type": "click", "button": "left", "x": 1, "y": 2},
                }
            )
        ),
        {
            "type": "computer_call_output",
            "call_id": "cc_1",
            "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AA"},
        },
        _dump(
            LocalShellCall.model_validate(
                {
                    "id": "ls_1",
                    "type": "local_shell_call",
                    "call_id": "lsc_1",
                    "status": "completed",
                    "action": {"type": "exec", "command": ["ls"], "env": {}},
                }
            )
        ),
        _dump(LocalShellCallOutput(id="lso_1", type="local_shell_call_output", output="a b")),
        _dump(
            McpListTools.model_validate(
                {"id": "ml_1", "type": "mcp_list_tools", "server_label": "s", "tools": []}
            )
        ),
        _dump(
            McpCall.model_validate(
                {
                    "id": "mc_1",
                    "type": "mcp_call",
                    "server_label": "s",
                    "name": "t",
                    "arguments": "{}",
                    "output": "ok",
                }
            )
        ),
        _dump(
            McpApprovalRequest.model_validate(
                {
                    "id": "mar_1",
                    "type": "mcp_approval_request",
                    "server_label": "s",
                    "name": "t",
                    "arguments": "{}",
                }
            )
        ),
        _dump(
            McpApprovalResponse(
                type="mcp_approval_response", approval_request_id="mar_1", approve=True
            )
        ),
        _dump(
            ResponseCustomToolCall(
                type="custom_tool_call", id="ct_1", call_id="cust_1", name="grep", input="x"
            )
        ),
        {"type": "custom_tool_call_output", "call_id": "cust_1", "output": "found"},
        {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"},
        _dump(
            ResponseOutputMessage.model_validate(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
                }
            )
        ),
        {"type": "some_future_item", "id": "fut_1", "payload": {"nested": [1, 2.5, None, True]}},
    ]


def _given(got: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """An item read back, with ``id`` as given when the store made one (it was given none)."""
    if isinstance(given.get("id"), str):
        return got
    assert got["id"].startswith("item_")
    out = {k: v for k, v in got.items() if k != "id"}
    return out | {"id": given["id"]} if "id" in given else out


async def test_every_item_kind_reads_back_json_equal(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    given = every_kind()
    added = await store.add_items(user, conv.id, given)
    assert [_given(a, g) for a, g in zip(added, given, strict=True)] == given
    page = await store.list_items(user, conv.id, limit=100)
    assert [_given(a, g) for a, g in zip(page.data, given, strict=True)] == given
    assert [item["id"] for item in page.data] == [item["id"] for item in added]
    assert (page.first_id, page.last_id, page.has_more) == (added[0]["id"], added[-1]["id"], False)
    for item in added:
        assert await store.get_item(user, conv.id, item["id"]) == item
    with pytest.raises(ItemNotFoundError):
        await store.get_item(user, conv.id, "nope")

    # the chat view: only the items with a chat form, valid OpenAI chat
    history = await store.get_chat_history(user, conv.id)
    assert [(m.role, m.tool_call_id) for m in history] == [
        ("user", None),
        ("assistant", None),
        ("tool", "call_w"),
        ("assistant", None),
        ("tool", "cust_1"),
        ("assistant", None),
    ]
    window = await store.get_context_window(user, conv.id, 10_000)
    CHAT.validate_python(window.messages)
    assert len(window.messages) == len(history)


async def test_items_interleave_with_chat_way_messages(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    first = await store.add_message(user, conv.id, "user", "hi")
    [reasoning] = await store.add_items(
        user, conv.id, [{"type": "reasoning", "summary": [], "encrypted_content": "e"}]
    )
    assert reasoning["id"].startswith("item_")
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    await store.add_message(user, conv.id, "assistant", None, tool_calls=[call])
    # a chat-way call answered by an item output: call_id pairs as tool_call_id
    await store.add_items(
        user, conv.id, [{"type": "function_call_output", "call_id": "c1", "output": "r"}]
    )
    page = await store.list_items(user, conv.id)
    types = [item["type"] for item in page.data]
    assert types == ["message", "reasoning", "function_call", "function_call_output"]
    assert page.data[0]["id"] == f"msg_{first.id.hex}"
    assert page.data[2]["call_id"] == "c1"
    # pages by item id, both ways
    one = await store.list_items(user, conv.id, limit=1, after=page.data[1]["id"])
    assert ([i["id"] for i in one.data], one.has_more) == ([page.data[2]["id"]], True)
    back = await store.list_items(user, conv.id, order="desc", after=page.data[2]["id"])
    assert [i["id"] for i in back.data] == [page.data[1]["id"], page.data[0]["id"]]
    assert await store.get_item(user, conv.id, page.data[2]["id"]) == page.data[2]
    history = await store.get_chat_history(user, conv.id)
    assert [m.role for m in history] == ["user", "assistant", "tool"]
    assert (await store.get_conversation(user, conv.id)).title == "hi"


async def test_item_ids_are_idempotent(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    item = {"type": "message", "id": "msg_a", "role": "user", "content": "x", "extra": [1]}
    [stored] = await store.add_items(user, conv.id, [item])
    assert await store.add_items(user, conv.id, [dict(item)]) == [stored]
    assert (await store.get_conversation(user, conv.id)).message_count == 1
    with pytest.raises(ConflictError):
        await store.add_items(user, conv.id, [item | {"content": "y"}])
    with pytest.raises(ConflictError):
        await store.add_items(user, conv.id, [item, {"role": "user", "content": "z"}])
    assert len((await store.list_items(user, conv.id)).data) == 1


async def test_bad_items_are_refused_whole(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    bad: list[Any] = [
        [{"no": "type"}],
        ["text"],
        [{"type": "reasoning", "summary": [{"text": "a\x00b"}]}],
        [{"type": "reasoning", "summary": "\ud800"}],
        [{"type": "reasoning", "summary": "x" * 100_001}],
        [{"type": "function_call_output", "call_id": "never", "output": "r"}],
        [{"type": "message", "role": "user", "content": "ok", "id": 5}],
        [{"id": "same", "type": "x"}, {"id": "same", "type": "y"}],
    ]
    for items in bad:
        with pytest.raises(ValidationError):
            await store.add_items(user, conv.id, items)
    assert (await store.list_items(user, conv.id)).data == []
    assert (await store.get_conversation(user, conv.id)).message_count == 0


async def test_parallel_calls_read_as_one_assistant_message(store: ChatHistory, user: str) -> None:
    """One model turn: reasoning, text and two calls, then both outputs (the Agents SDK's
    add_items of one response): the chat views see ONE assistant message with both calls, as
    OpenAI's chat format requires; the reasoning is in none of them."""
    conv = await store.create_conversation(user)
    await store.add_items(user, conv.id, [{"role": "user", "content": "two cities"}])
    calls = [
        _dump(
            ResponseFunctionToolCall(
                type="function_call", id=f"fc_{c}", call_id=c, name="weather", arguments="{}"
            )
        )
        for c in ("ca", "cb")
    ]
    turn = [
        _dump(
            ResponseReasoningItem(id="rs_t", type="reasoning", summary=[], encrypted_content="e")
        ),
        *calls,
        _dump(FunctionCallOutput(type="function_call_output", call_id="ca", output="r1")),
        _dump(FunctionCallOutput(type="function_call_output", call_id="cb", output="r2")),
    ]
    await store.add_items(user, conv.id, turn)
    # the answer streamed after its own call (text after the calls): one message too
    await store.add_items(
        user,
        conv.id,
        [
            {"type": "function_call", "call_id": "cc", "name": "w", "arguments": "{}"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {"type": "function_call_output", "call_id": "cc", "output": "r3"},
        ],
    )
    history = await store.get_chat_history(user, conv.id)
    shapes = [(m.role, m.content, [c["id"] for c in m.tool_calls or ()]) for m in history]
    assert shapes == [
        ("user", "two cities", []),
        ("assistant", None, ["ca", "cb"]),
        ("tool", "r1", []),
        ("tool", "r2", []),
        ("assistant", "Checking.", ["cc"]),
        ("tool", "r3", []),
    ]
    page = await store.list_messages(user, conv.id)
    assert [m.id for m in page.data] == [m.id for m in history]
    window = await store.get_context_window(user, conv.id, 10_000)
    CHAT.validate_python(window.messages)
    assert [m["role"] for m in window.messages] == [m.role for m in history]
    newest = await store.get_chat_history(user, conv.id, limit=3)
    assert [m.role for m in newest] == ["tool", "assistant", "tool"]
    # list_items still holds every item, each as given
    items = (await store.list_items(user, conv.id)).data
    assert [i.get("type", "message") for i in items][:6] == [
        "message",
        "reasoning",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
    ]
    assert items[2:4] == calls


async def test_items_of_another_user_are_not_found(store: ChatHistory, user: str) -> None:
    conv = await store.create_conversation(user)
    await store.add_items(user, conv.id, [{"id": "x_1", "type": "x"}])
    other = f"other-{uuid.uuid4()}"
    with pytest.raises(Exception, match="not found"):
        await store.list_items(other, conv.id)
    with pytest.raises(Exception, match="not found"):
        await store.get_item(other, conv.id, "x_1")


async def test_items_join_the_active_branch(store: ChatHistory, user: str) -> None:
    """Items are nodes of the tree: they follow the active branch, and the chat views of a
    branched conversation leave the items with no chat form out."""
    conv = await store.create_conversation(user)
    question = await store.add_message(user, conv.id, "user", "q")
    await store.add_items(
        user,
        conv.id,
        [
            {"type": "reasoning", "id": "rs_a", "summary": []},
            {"type": "message", "role": "assistant", "content": "first", "id": "msg_a"},
        ],
    )
    # regenerate: a new answer after the question, on a branch of its own
    [again] = await store.add_messages(
        user, conv.id, [{"role": "assistant", "content": "second", "parent_id": question.id}]
    )
    await store.add_items(user, conv.id, [{"type": "web_search_call", "id": "ws_b"}])
    ids = [item["id"] for item in (await store.list_items(user, conv.id)).data]
    assert ids == [f"msg_{question.id.hex}", f"msg_{again.id.hex}", "ws_b"]
    history = await store.get_chat_history(user, conv.id)
    assert [m.content for m in history] == ["q", "second"]
    newest = await store.get_chat_history(user, conv.id, limit=5)
    assert [m.content for m in newest] == ["q", "second"]
    page = await store.list_messages(user, conv.id, order="desc")
    assert [m.content for m in page.data] == ["second", "q"]
    window = await store.get_context_window(user, conv.id, 1000)
    assert [m["content"] for m in window.messages] == ["q", "second"]
    # back to the first answer: its items are the branch's again
    first = (await store.get_chat_history(user, conv.id, limit=1))[0]
    assert first.sibling_count == 2
    all_messages = await store.list_messages(user, conv.id, branch="all")
    assert [m.content for m in all_messages.data] == ["q", "first", "second"]
    await store.update_conversation(user, conv.id, current_message_id=all_messages.data[1].id)
    ids = [item["id"] for item in (await store.list_items(user, conv.id)).data]
    assert ids == [f"msg_{question.id.hex}", "rs_a", "msg_a"]


async def test_an_item_row_is_no_message(store: ChatHistory, user: str) -> None:
    """The row of an item with no chat form is the conversation's current node, but no
    message: get_message does not find it."""
    conv = await store.create_conversation(user)
    await store.add_items(user, conv.id, [{"type": "reasoning", "id": "rs_1", "summary": []}])
    current = (await store.get_conversation(user, conv.id)).current_message_id
    assert current is not None
    with pytest.raises(MessageNotFoundError):
        await store.get_message(user, conv.id, current)
    assert await store.get_chat_history(user, conv.id) == []
    assert (await store.list_messages(user, conv.id)).data == []
    [message] = await store.add_messages(user, conv.id, [{"role": "user", "content": "after"}])
    assert message.parent_id == current
