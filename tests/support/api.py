"""Helpers of the HTTP API's tests (``tests/http/``): tokens, settings, problem checks."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

from chathistory.config import Settings
from tests.fixtures.http import SECRET

PROBLEM_JSON = "application/problem+json"


def bearer(sub: str) -> dict[str, str]:
    claims = {"sub": sub, "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "jwt_jwks_url": None,
        "jwt_issuer": None,
        "jwt_audience": None,
        "insecure_no_auth": False,
        "retry_after_seconds": 7,
    }
    return Settings(**(values | overrides))


def problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem response and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def locs(body: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in body["errors"]]


def names(body: dict[str, Any], field: list[Any]) -> bool:
    """Whether some error of a 422 problem is located at ``field`` or inside it."""
    return any(loc[: len(field)] == field for loc in locs(body))


async def new_conversation(http: httpx.AsyncClient, user: str, **fields: Any) -> dict[str, Any]:
    response = await http.post(f"/api/{user}/conversations", json=fields, headers=bearer(user))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
