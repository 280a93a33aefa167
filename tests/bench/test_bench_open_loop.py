"""The open-loop scenario's client against a real ``chathistory serve`` (tiny and short: this
checks the machinery, never a latency)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt

from chathistory_bench.open_loop import OpenLoopPlan, open_loop_clients
from tests.fixtures.http import SECRET
from tests.http.test_http_serve import serving


async def test_every_scheduled_turn_is_sent_and_timed(tmp_path: Path) -> None:
    with serving(tmp_path, CHATHISTORY_JWT_SECRET=SECRET) as (base_url, _process):
        users: dict[str, list[str]] = {}
        async with httpx.AsyncClient(base_url=base_url) as http:
            for n in range(3):
                user = f"ol-{n}"
                token = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, SECRET, "HS256")
                created = await http.post(
                    f"/api/{user}/conversations",
                    json={},
                    headers={"Authorization": f"Bearer {token}"},
                )
                users[user] = [created.json()["id"]]
        plan = OpenLoopPlan(users=3, turn_seconds=0.1, seconds=1.0)
        result = await open_loop_clients(base_url, SECRET, users, plan)
    sent = sum(len(values) for values in result["samples"].values())
    assert result["errors"] == {}
    assert result["scheduled"] > 5 and sent == result["scheduled"]
    assert all(latency > 0 for values in result["samples"].values() for latency in values)


async def test_a_turn_never_answered_counts_as_an_error_after_give_up_seconds() -> None:
    """A server that accepts and never answers: every turn gives up and is counted, so a step
    of the capacity ramp ends however stalled its target."""
    import asyncio

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    users = {"ol-0": ["00000000-0000-0000-0000-000000000000"]}
    plan = OpenLoopPlan(users=1, turn_seconds=0.05, seconds=0.5, give_up_seconds=0.2)
    async with server:
        result = await open_loop_clients(f"http://127.0.0.1:{port}", SECRET, users, plan)
    assert result["scheduled"] > 0 and result["elapsed"] > 0
    assert all(not values for values in result["samples"].values())
    assert sum(result["errors"].values()) == result["scheduled"]
    assert {key.split(": ", 1)[1] for key in result["errors"]} == {"no answer in 0.2 s"}
