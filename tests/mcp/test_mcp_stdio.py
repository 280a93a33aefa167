"""The MCP server over stdio (SPEC 12): ``chathistory mcp --user USER`` as a subprocess,
driven by the official SDK's client, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chathistory import ChatHistory
from chathistory.db import create_engine
from tests.support.mcp import (
    READ_AND_WRITE,
    check_deleting,
    check_isolation,
    check_tool_errors,
    exercise_tools,
    stdio_session,
)


@pytest.fixture(params=["sqlite", "postgres"])
def stdio_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend the stdio server runs on here."""
    return str(request.getfixturevalue(f"{request.param}_store_url"))


@pytest.fixture
async def stdio_backend(stdio_url: str) -> AsyncIterator[tuple[str, ChatHistory]]:
    """The database URL for the subprocess, and a store on it for the test itself."""
    url = stdio_url
    store = ChatHistory(create_engine(url), owns_engine=True)
    try:
        yield url, store
    finally:
        await store.close()


async def test_stdio_serves_the_tools_for_its_user(
    tmp_path: Path, stdio_backend: tuple[str, ChatHistory], user: str, other_user: str
) -> None:
    url, store = stdio_backend
    async with stdio_session(tmp_path, url, user) as session:
        assert session.initialize_result is not None
        assert session.initialize_result.server_info.name == "chathistory"
        tools = (await session.list_tools()).tools
        assert {tool.name for tool in tools} == READ_AND_WRITE  # no deleting tools by default
        for tool in tools:
            assert tool.input_schema["type"] == "object"
            assert tool.output_schema is not None and tool.description
        await exercise_tools(session, user)
        await check_tool_errors(session)
        await check_isolation(session, store, user, other_user)
    assert [c.user_id for c in (await store.list_conversations(user, archived="any")).data] == [
        user
    ] * 4  # what the session created is in the store, as the user's


async def test_stdio_allow_delete(
    tmp_path: Path, stdio_backend: tuple[str, ChatHistory], user: str, other_user: str
) -> None:
    url, store = stdio_backend
    async with stdio_session(tmp_path, url, user, "--allow-delete") as session:
        await check_deleting(session, store, user)
        await check_isolation(session, store, user, other_user)


def test_stdio_refuses_a_bad_user(tmp_path: Path, sqlite_store_url: str) -> None:
    command = ["-m", "chathistory.cli", "mcp", "--user", "", "--database-url", sqlite_store_url]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "user_id" in done.stderr and done.stdout == ""
