from chathistory import ChatHistory


async def test_round_trip(store: ChatHistory, user: str) -> None:
    conv = await store.get_or_create_conversation(user)
    await store.add_message(user, conv.id, "user", "Hello   there\n world")
    history = await store.get_chat_history(user, conv.id)
    assert [m.content for m in history] == ["Hello   there\n world"]
    again = await store.get_conversation(user, conv.id)
    assert again.title == "Hello there world"
    assert again.message_count == 1
