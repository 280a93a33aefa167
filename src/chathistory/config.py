"""Settings of the faces (HTTP service, CLI), read from ``CHATHISTORY_*`` environment variables.

The library itself never reads the environment: :class:`chathistory.ChatHistory` takes arguments.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chathistory.store import (
    DEFAULT_MAX_BATCH_MESSAGES,
    DEFAULT_MAX_CONTENT_CHARS,
    DEFAULT_MAX_RESPONSE_BYTES,
)
from chathistory.store.purging import DEFAULT_DUTY


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATHISTORY_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./chathistory.db",
        description="postgresql://, postgres:// (libpq parameters kept), sqlite:///path",
    )
    pool_size: int = Field(default=10, ge=1, description="connections the pool keeps open")
    max_overflow: int = Field(
        default=10, ge=0, description="connections opened past pool_size under load"
    )
    pool_timeout: float = Field(default=10.0, gt=0, description="seconds to wait for a connection")
    connect_timeout: float = Field(
        default=10.0, gt=0, description="seconds to wait for a new connection (503 beyond)"
    )
    statement_timeout: float = Field(
        default=30.0, gt=0, description="seconds a statement may run before it is cancelled (503)"
    )
    prepared_statement_cache: bool = Field(
        default=False,
        description="keep named prepared statements (only for direct PostgreSQL connections)",
    )
    max_content_chars: int = Field(
        default=DEFAULT_MAX_CONTENT_CHARS, ge=1, description="characters of one message's text"
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="bytes of one request body (413 beyond)"
    )
    max_batch_messages: int = Field(
        default=DEFAULT_MAX_BATCH_MESSAGES, ge=1, description="messages one append may carry"
    )
    max_response_bytes: int = Field(
        default=DEFAULT_MAX_RESPONSE_BYTES,
        ge=64 * 1024,
        description="bytes of message content a page or context window returns at most",
    )
    stream_timeout_seconds: float = Field(
        default=600,
        gt=0,
        description="an in_progress message not updated for this long reads as incomplete",
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=4 * 1024,
        le=1024 * 1024,
        description="bytes a request line plus headers may take (431 and the connection closed "
        "beyond); room for large identity-provider tokens and proxy-added headers",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="seconds a request line and headers may take to arrive (408 beyond); a "
        "connection's first request counts from the connection's opening",
    )
    body_timeout_seconds: float = Field(
        default=60.0, gt=0, description="seconds a request body may take to arrive (408 beyond)"
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="connections each worker process serves at once (503 beyond); keep the "
        "process's open-files limit above it",
    )
    purge_duty: float = Field(
        default=DEFAULT_DUTY,
        gt=0,
        le=1,
        description="fraction of its time `chathistory purge` works: after each batch it pauses "
        "in proportion (0.5: as long as the batch took; 1: no pause), leaving the rest to writers",
    )
    search: bool = Field(
        default=True,
        description="index messages for search; false: appends write no search rows and a "
        "search answers 409 search_disabled (fill the index in before turning it back on)",
    )
    migrate_on_start: bool = Field(
        default=True, description="bring the schema up to date when the service starts"
    )

    # HTTP service (``chathistory serve``)
    host: str = Field(default="127.0.0.1", description="interface to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port")
    workers: int = Field(default=1, ge=1, description="worker processes")
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with a 503 when the database is unavailable"
    )
    fast_lane: bool = Field(
        default=True,
        description="answer the hot reads and appends of messages without FastAPI's per-request "
        "work, with the routes' own answers; false: every request goes through FastAPI",
    )

    cors_origins: str = Field(
        default="",
        description="comma-separated origins whose browser apps may call the API (CORS)",
    )

    # MCP (SPEC 12): ``/mcp`` of the HTTP service
    mcp_allow_delete: bool = Field(
        default=False, description="offer the MCP tools that delete (delete_conversation, ...)"
    )
    mcp_allowed_hosts: str = Field(
        default="localhost,localhost:*,127.0.0.1,127.0.0.1:*,[::1],[::1]:*",
        description="comma-separated Host values /mcp answers (host:* for any port; * for "
        "any host), against DNS rebinding",
    )

    # Authentication: a shared secret (HS256), a JWKS URL (EdDSA, ES256, RS256), or both.
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 secret, 32 bytes or more")
    jwt_jwks_url: str | None = Field(default=None, description="http(s) URL of a JSON Web Key Set")
    jwt_issuer: str | None = Field(default=None, description="required `iss` of every token")
    jwt_audience: str | None = Field(default=None, description="required `aud` of every token")
    jwt_leeway_seconds: float = Field(
        default=30.0, ge=0, le=300, description="clock skew allowed on exp / nbf / iat"
    )
    jwt_jwks_cache_seconds: float = Field(
        default=300.0, gt=0, description="how long a fetched key set is used before refetching"
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="development only: serve without authentication (logged loudly on start)",
    )

    @field_validator("jwt_secret", "jwt_jwks_url", "jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def mcp_allowed_host_list(self) -> list[str]:
        return [host.strip() for host in self.mcp_allowed_hosts.split(",") if host.strip()]

    def open_options(self) -> dict[str, Any]:
        """Everything :meth:`ChatHistory.open` takes from these settings but the URL: the
        store's limits and the engine's options. The service and the command line open their
        stores with it, so both apply the same limits."""
        return {
            "max_content_chars": self.max_content_chars,
            "max_batch_messages": self.max_batch_messages,
            "max_response_bytes": self.max_response_bytes,
            "stream_timeout": timedelta(seconds=self.stream_timeout_seconds),
            "search": self.search,
            **self.engine_options(),
        }

    def engine_options(self) -> dict[str, object]:
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "pool_timeout": self.pool_timeout,
            "connect_timeout": self.connect_timeout,
            "prepared_statement_cache": self.prepared_statement_cache,
            "statement_timeout_ms": int(self.statement_timeout * 1000),
        }


def settings_help() -> str:
    """Every setting as its environment variable, default and meaning (``serve --help``)."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = "none" if field.default in (None, "") else field.default
        lines.append(f"CHATHISTORY_{name.upper()} (default {default}): {field.description}")
    return "\n".join(lines)
