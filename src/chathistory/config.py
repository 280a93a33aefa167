"""Settings of the faces (HTTP service, CLI), read from ``CHATHISTORY_*`` environment variables.

The library itself never reads the environment: :class:`chathistory.ChatHistory` takes arguments.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chathistory.store import DEFAULT_MAX_CONTENT_CHARS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATHISTORY_", extra="ignore")

    database_url: str = "sqlite:///./chathistory.db"
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout: float = Field(default=10.0, gt=0, description="seconds to wait for a connection")
    connect_timeout: float = Field(default=10.0, gt=0)
    prepared_statement_cache: bool = Field(
        default=False,
        description="keep named prepared statements (only for direct PostgreSQL connections)",
    )
    max_content_chars: int = Field(default=DEFAULT_MAX_CONTENT_CHARS, ge=1)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)

    def engine_options(self) -> dict[str, object]:
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "pool_timeout": self.pool_timeout,
            "connect_timeout": self.connect_timeout,
            "prepared_statement_cache": self.prepared_statement_cache,
        }
