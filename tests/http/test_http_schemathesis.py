"""The API against its own OpenAPI document: schemathesis generates requests (valid and
invalid) for every operation and checks that none is a 5xx and that every response conforms
to the document (status, content type, headers, body schema). Bounded and SQLite only, so it
stays fast; it runs against a real uvicorn server on 127.0.0.1 so the app's lifespan opens its
own store."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chathistory.config import Settings
from chathistory.http import create_app
from chathistory.http.docs import CONVERSATION_EXAMPLE, MESSAGE_EXAMPLES
from tests.fixtures.http import SECRET

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]


def app_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        jwt_secret=SECRET,
        jwt_jwks_url=None,
        jwt_issuer=None,
        jwt_audience=None,
        insecure_no_auth=False,
    )


def bearer(user: str) -> dict[str, str]:
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


schema = schemathesis.openapi.from_dict(create_app(app_settings("sqlite://")).openapi())


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = tmp_path_factory.mktemp("schemathesis") / "api.db"
    app = create_app(app_settings(f"sqlite:///{database}"))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)  # polling a starting server, not synchronising tests
    try:
        _seed(base_url)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _seed(base_url: str) -> None:
    """Store the objects the document's examples name, so example requests find them."""
    user = CONVERSATION_EXAMPLE["user_id"]
    headers = bearer(user)
    with httpx.Client(base_url=base_url, headers=headers) as http:
        http.post(
            f"/api/{user}/conversations", json={"id": CONVERSATION_EXAMPLE["id"]}
        ).raise_for_status()
        http.post(
            f"/api/{user}/conversations/{CONVERSATION_EXAMPLE['id']}/messages",
            json=[
                {"id": m["id"], "role": m["role"], "content": m["content"]}
                for m in MESSAGE_EXAMPLES
            ],
        ).raise_for_status()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case: Any, live_server: str) -> None:
    user = (case.path_parameters or {}).get("user_id")
    headers = bearer(user) if isinstance(user, str) else {}
    case.call_and_validate(base_url=live_server, headers=headers, checks=CHECKS, timeout=30)
