"""Readiness and the schema: ``/readyz`` checks the schema's revision, a call on a database that
is not migrated is a 503 naming the fix, and an unauthenticated 503 never quotes the driver."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from chathistory import ChatHistory, migrations
from chathistory.config import Settings
from chathistory.db import create_engine
from chathistory.errors import SchemaNotCurrentError
from chathistory.http import create_app
from tests.fixtures.http import SECRET, asgi_client

UPGRADE = "chathistory db upgrade"


def bearer(sub: str) -> dict[str, str]:
    claims = {"sub": sub, "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[tuple[httpx.AsyncClient, ChatHistory]]:
    """The app on a store opened without migrating, as with migrate-on-start off."""
    store = ChatHistory(create_engine(url, pool_timeout=5, connect_timeout=5), owns_engine=True)
    settings = Settings(jwt_secret=SECRET, jwt_jwks_url=None, retry_after_seconds=4)
    try:
        async with asgi_client(create_app(settings, store=store)) as http:
            yield http, store
    finally:
        await store.close()


def unavailable(response: httpx.Response) -> str:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "4"
    assert response.json()["code"] == "unavailable"
    detail: str = response.json()["detail"]
    return detail


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database nothing has migrated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    make: Callable[[str], str] = request.getfixturevalue("make_pg_database")
    return make("chathistory_unmigrated")


async def test_an_unmigrated_database_is_not_ready_and_every_call_is_a_503(
    empty_url: str, user: str
) -> None:
    me = bearer(user)
    conv = uuid.uuid4()
    messages = f"/api/{user}/conversations/{conv}/messages"
    async with serving(empty_url) as (http, store):
        assert "not migrated" in unavailable(await http.get("/readyz"))
        assert UPGRADE in unavailable(await http.get("/readyz"))
        with pytest.raises(SchemaNotCurrentError, match=UPGRADE):
            await store.ping()
        calls: list[tuple[str, str, Any]] = [
            ("POST", f"/api/{user}/conversations", {"title": "t"}),
            ("GET", f"/api/{user}/conversations", None),
            ("GET", f"/api/{user}/conversations/{conv}", None),
            ("GET", f"/api/{user}/search?q=word", None),
            # twice each: the second one through the hot paths (the fast lane, the pool's
            # connection used directly on PostgreSQL)
            ("GET", messages, None),
            ("GET", messages, None),
            ("POST", messages, {"role": "user", "content": "hi"}),
            ("POST", messages, {"role": "user", "content": "hi"}),
        ]
        for method, path, body in calls:
            response = await http.request(method, path, json=body, headers=me)
            assert UPGRADE in unavailable(response), (method, path)

        await migrations.upgrade(empty_url)
        assert (await http.get("/readyz")).status_code == 200
        created = await http.post(f"/api/{user}/conversations", json={}, headers=me)
        assert created.status_code == 201


async def test_a_schema_behind_this_release_is_not_ready_and_one_ahead_is(
    empty_url: str,
) -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    head = script.get_revision(migrations.head())
    assert head is not None and isinstance(head.down_revision, str)
    await migrations.upgrade(empty_url, head.down_revision)
    async with serving(empty_url) as (http, store):
        detail = unavailable(await http.get("/readyz"))
        assert f"at revision {head.down_revision}, behind this release's {head.revision}" in detail
        assert UPGRADE in detail

        await migrations.upgrade(empty_url)
        assert (await http.get("/readyz")).status_code == 200
        # A newer release migrated it (a rolling upgrade): this one stays ready.
        async with store.engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = 'f00dfeedbeef'")
            )
        assert (await http.get("/readyz")).status_code == 200


@pytest.mark.parametrize("wrong", ["database", "role"])
async def test_an_unauthenticated_503_does_not_name_the_role_or_the_database(
    pg_server_url: str, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(pg_server_url)
    secret_name = f"secret_{wrong}_{uuid.uuid4().hex[:8]}"
    if wrong == "database":
        parts = parts._replace(path=f"/{secret_name}")
    else:
        parts = parts._replace(netloc=f"{secret_name}:pw@{parts.netloc.rsplit('@', 1)[-1]}")
    async with serving(urlunsplit(parts)) as (http, _):
        ready = await http.get("/readyz")
        assert unavailable(ready) == "the database is unavailable"
        assert secret_name not in ready.text
        assert "postgres" not in ready.text
    assert secret_name in caplog.text  # the operator's log has the reason
