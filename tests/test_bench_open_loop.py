"""The open-loop scenario's client against a real ``chathistory serve`` (tiny and short: this
checks the machinery, never a latency)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt

from chathistory.bench.open_loop import OpenLoopPlan, open_loop_clients
from test_http_serve import serving

SECRET = "open-loop-secret-0123456789-abcdefghijklm"


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
