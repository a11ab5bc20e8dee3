"""Settings from the environment (``NOCLASH_*``), read once per process.

Why pydantic-settings: one typed place lists every knob with its default, and the CLI, the
API and the tests all build the same object instead of reading ``os.environ`` ad hoc.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./noclash.db"


def normalise_database_url(url: str) -> str:
    """Pick the driver noclash supports for each dialect.

    ``postgresql://`` would select psycopg2 in SQLAlchemy; noclash speaks psycopg 3.
    """
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOCLASH_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    # Connection pool per process; concurrent requests beyond it wait for a connection.
    pool_size: int = 10
    pool_max_overflow: int = 20
    # SQLite: how long a writer waits for the lock before "database is locked" (ms).
    sqlite_busy_timeout_ms: int = 30_000
    # Channels.
    meta_verify_token: str | None = None
    meta_app_secret: str | None = None
    # A verified API token is remembered this long per process (0 disables the cache).
    auth_cache_seconds: float = Field(default=10.0, ge=0)
    # Idempotency keys live this long (seconds), then a retry executes anew.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    # A duplicate waits this long (seconds) for the request holding its key to commit,
    # then answers 409 idempotency-key-in-progress with Retry-After.
    idempotency_wait_seconds: float = Field(default=10.0, gt=0)
    # Input limits for public endpoints.
    max_text_length: int = 4000
    max_body_bytes: int = 64 * 1024

    @property
    def sqlalchemy_url(self) -> str:
        return normalise_database_url(self.database_url)


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
