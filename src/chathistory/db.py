"""Database URLs as users paste them, and engines configured for this store.

PostgreSQL goes through asyncpg. By default no prepared statement outlives its transaction
(statements are parsed unnamed inside the transaction), so the same engine works directly
against PostgreSQL, behind PgBouncer in transaction pooling mode and on Neon's pooled endpoint.
SQLite goes through aiosqlite, with foreign keys on, WAL and a busy timeout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import await_

from chathistory.errors import ConfigurationError

_PG_SCHEMES = ("postgres", "postgresql")
# libpq parameters asyncpg does not take; it would send them to the server as settings.
_LIBPQ_IGNORED = frozenset(
    {
        "channel_binding",  # asyncpg authenticates with SCRAM without channel binding
        "gssencmode",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "client_encoding",  # asyncpg always speaks UTF-8
    }
)
# SQLAlchemy-style asyncpg parameters that may arrive in a pasted URL.
_SQLALCHEMY_ONLY = frozenset({"prepared_statement_cache_size", "statement_cache_size"})


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """A normalised database location: the SQLAlchemy URL and the driver's extra arguments."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def render(self) -> str:
        """The location with any password hidden, for logs and messages."""
        if self.backend == "postgresql":
            return _hide_password(str(self.connect_args.get("dsn", "")))
        return self.url.render_as_string(hide_password=True)


def parse_database_url(url: str | URL) -> DatabaseTarget:
    """Accept ``postgres://``, ``postgresql://`` (libpq parameters such as ``sslmode`` and
    ``channel_binding`` included, as Neon hands them out), SQLAlchemy's async forms
    (``postgresql+asyncpg://``, ``sqlite+aiosqlite://``), ``sqlite:///path`` and a bare file path.
    """
    raw = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url).strip()
    if not raw:
        raise ConfigurationError("the database URL is empty")
    if "://" not in raw:
        return _sqlite(raw)
    scheme = raw.split("://", 1)[0].lower()
    dialect, _, _driver = scheme.partition("+")
    if dialect in _PG_SCHEMES:
        return _postgres(raw)
    if dialect == "sqlite":
        try:
            parsed = make_url(raw)
        except ArgumentError as exc:
            raise ConfigurationError(f"cannot read the SQLite URL: {exc}") from None
        return _sqlite(parsed.database or ":memory:")
    raise ConfigurationError(
        f"unsupported database URL scheme {scheme!r}: use postgresql://..., or a SQLite path"
    )


def _sqlite(path: str) -> DatabaseTarget:
    if path in ("", ":memory:"):
        return DatabaseTarget(URL.create("sqlite+aiosqlite", database=":memory:"))
    return DatabaseTarget(URL.create("sqlite+aiosqlite", database=os.path.expanduser(path)))


def _postgres(raw: str) -> DatabaseTarget:
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 - read to validate: asyncpg would fail on it later
    except ValueError:
        raise ConfigurationError("the port of the database URL is not a number") from None
    query: list[tuple[str, str]] = []
    connect_args: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _LIBPQ_IGNORED or key in _SQLALCHEMY_ONLY:
            continue
        if key == "connect_timeout":
            try:
                connect_args["timeout"] = float(value)
            except ValueError:
                raise ConfigurationError("connect_timeout must be a number of seconds") from None
            continue
        if key == "ssl":  # SQLAlchemy/asyncpg spelling
            key = "sslmode"
        query.append((key, value))
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))
    connect_args["dsn"] = dsn
    return DatabaseTarget(URL.create("postgresql+asyncpg"), connect_args)


# Query parameters libpq (and asyncpg) take a secret from.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def _hide_password(dsn: str) -> str:
    """``dsn`` with the password of the user part and of ``password`` / ``sslpassword``
    query parameters replaced by ``***``."""
    parts = urlsplit(dsn)
    netloc, query = parts.netloc, parts.query
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _SECRET_PARAMETERS for key, _ in pairs):
        hidden = [(k, "***" if k.lower() in _SECRET_PARAMETERS else v) for k, v in pairs]
        query = urlencode(hidden, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return dsn
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    statement_timeout_ms: int | None = None,
    prepared_statement_cache: bool = False,
    sqlite_busy_timeout_ms: int = 30_000,
    echo: bool = False,
) -> AsyncEngine:
    """An AsyncEngine for ``url`` set up as this store needs it.

    ``prepared_statement_cache=True`` lets asyncpg keep named prepared statements on each
    connection: faster on a direct connection, wrong behind PgBouncer in transaction mode
    (before 1.21). Leave it off unless every connection goes straight to PostgreSQL.
    """
    target = parse_database_url(url)
    if target.backend == "postgresql":
        args = dict(target.connect_args)
        args.setdefault("timeout", connect_timeout)
        if statement_timeout_ms is not None:
            args["command_timeout"] = statement_timeout_ms / 1000
        if prepared_statement_cache:
            args.update(statement_cache_size=100, prepared_statement_cache_size=100)
        else:
            args.update(
                statement_cache_size=0,
                prepared_statement_cache_size=0,
                prepared_statement_name_func=_unnamed,
            )
        engine = create_async_engine(
            target.url,
            connect_args=args,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_recycle=1800,
            # The most recently used connection first: its server process and socket are still
            # warm (on a busy host, round-robin over idle connections costs ~40 us a call), and
            # a quiet spell leaves the rest idle, for recycling.
            pool_use_lifo=True,
            echo=echo,
            hide_parameters=True,  # a failed statement's error never carries message text
        )
        event.listen(engine.sync_engine.pool, "connect", _json_as_text)
        event.listen(engine.sync_engine.pool, "checkout", _replace_closed)
        return engine
    memory = target.url.database == ":memory:"
    folder = os.path.dirname(os.path.abspath(target.url.database or "."))
    if not memory and not os.path.isdir(folder):
        raise ConfigurationError(f"the folder of the SQLite database does not exist: {folder}")
    engine = create_async_engine(
        target.url,
        connect_args={"timeout": sqlite_busy_timeout_ms / 1000},
        echo=echo,
        hide_parameters=True,
        **({"poolclass": StaticPool} if memory else {"pool_timeout": pool_timeout}),
    )
    _configure_sqlite(engine, sqlite_busy_timeout_ms, wal=not memory)
    return engine


def _replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection whose socket the server closed (a restart, an idle timeout) is
    replaced at checkout, before a request uses it: asyncpg notices the closed socket as soon
    as the event loop sees it, so this costs no round trip."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the pooled connection was closed by the server")


def _json_as_text(dbapi_connection: Any, _record: Any) -> None:
    """JSON in and out as text, as asyncpg's own codecs work (SQLAlchemy's default is the
    binary format, which costs a copy per value): the same values in and out, less work per
    value. Runs after SQLAlchemy's own setup of each new connection (no round trip: the types
    are built in)."""
    driver = dbapi_connection.driver_connection
    for kind, decoder in (("json", json.loads), ("jsonb", decode_jsonb)):
        await_(
            driver.set_type_codec(
                kind, encoder=_json_text, decoder=decoder, schema="pg_catalog", format="text"
            )
        )


def _json_text(value: str) -> str:
    # SQLAlchemy's JSON types and the store's own statements send JSON already serialized.
    if not isinstance(value, str):
        raise TypeError(f"a JSON parameter must be JSON text, not {type(value).__name__}")
    return value


_loads = json.loads
# What json.loads parses a string with (its C scanner); typeshed leaves it out.
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def decode_jsonb(text: str) -> Any:
    """A jsonb value from the text PostgreSQL writes: exactly what ``json.loads`` returns,
    without its general parse for the two commonest values, the empty object and a string
    (message content). jsonb text is canonical: a string is quoted and escapes every quote,
    backslash and control character, so without a backslash its text is the value; with
    escapes it goes straight to the string scanner ``json.loads`` would use."""
    if text == "{}":
        return {}
    if text[:1] == '"':
        if "\\" not in text:
            return text[1:-1]
        value, end = _scanstring(text, 1)
        if end == len(text):
            return value
    return _loads(text)


def _unnamed() -> str:
    # asyncpg parses an unnamed statement; the next Parse on that server connection replaces
    # it, so nothing survives the transaction and nothing collides behind a pooler.
    return ""


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int, *, wal: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()
