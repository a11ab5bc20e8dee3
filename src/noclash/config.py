"""Settings from the environment (``NOCLASH_*``), read once per process.

Why pydantic-settings: one typed place lists every knob with its default, and the CLI, the
API and the tests all build the same object instead of reading ``os.environ`` ad hoc.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator
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
    # The defaults of `noclash serve --host --port` (the options read these variables).
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Connection pool per process; concurrent requests beyond it wait for a connection.
    # Bounded below because SQLAlchemy takes a size of 0 as "no limit" and an overflow of
    # -1 as "no limit on overflow": a typo would silently remove the bound.
    pool_size: int = Field(default=10, ge=1)
    pool_max_overflow: int = Field(default=20, ge=0)
    # SQLite: how long a writer waits for the lock before "database is locked" (ms; 0:
    # fail at once, never a negative wait).
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    # PostgreSQL: how long a statement waits for a row or table lock another session holds
    # before it fails, answered 503 with Retry-After (ms; 0: no bound, PostgreSQL's own
    # default). Without it one transaction left open elsewhere (a psql session, a stuck
    # job) made every request touching its rows wait for as long as it stayed open.
    lock_timeout_ms: int = Field(default=30_000, ge=0)
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
    # Input limits for public endpoints. Below these bounds every message, or every POST
    # with a body (Meta's and Telegram's webhooks included), would be refused.
    max_text_length: int = Field(default=4000, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # The platforms' webhooks (/webhooks/...): Meta batches up to a thousand updates in one
    # POST, each non-ASCII letter escaped in six bytes; a 413 there is redelivered forever.
    max_webhook_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Abuse limits of the public endpoints (noclash.api.ratelimit), counted in the database
    # so that every process and host shares them: hits per fixed window, 0 disables one.
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    rate_limit_sessions_per_address: int = Field(default=30, ge=0)
    rate_limit_sessions_per_chatbot: int = Field(default=600, ge=0)
    rate_limit_messages_per_address: int = Field(default=120, ge=0)
    rate_limit_messages_per_chatbot: int = Field(default=3000, ge=0)
    # Wrong bearer tokens from one address per window before they are answered 429.
    rate_limit_auth_failures_per_address: int = Field(default=20, ge=0)
    # Peers whose X-Forwarded-For names the client: IPs or CIDRs, comma-separated, "*" for
    # any, "" for none. Anyone else's X-Forwarded-For is ignored (it is the client's word).
    trusted_proxies: str = "127.0.0.1,::1"
    # Connection bounds of `noclash serve` (noclash.serving): what a slow or idle client may
    # hold. Seconds, bytes and counts per process.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    body_idle_timeout_seconds: float = Field(default=10.0, gt=0)
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0)
    send_timeout_seconds: float = Field(default=30.0, gt=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    max_connections: int = Field(default=1000, ge=1)

    # The outbound path (noclash.dispatch): where replies go and how they are retried.
    # `serve` runs a dispatcher in-process unless this is off; `noclash worker` runs one alone.
    dispatcher: bool = True
    meta_graph_url: str = "https://graph.facebook.com/v21.0"
    telegram_api_url: str = "https://api.telegram.org"
    # One HTTP request to a platform: connecting and reading its answer (seconds).
    platform_timeout_seconds: float = Field(default=10.0, gt=0)
    # Sends in flight per dispatcher, and how often an idle one looks for due work.
    dispatcher_concurrency: int = Field(default=64, ge=1, le=1024)
    dispatcher_poll_seconds: float = Field(default=0.5, gt=0)
    # How long a claimed delivery is a dispatcher's before another may take it over (a
    # dispatcher killed mid-send loses its claims after this long).
    delivery_lease_seconds: float = Field(default=30.0, gt=0)
    # Retries: exponential backoff from this base, with jitter, up to the cap; attempts in
    # all before a delivery is failed.
    delivery_max_attempts: int = Field(default=12, ge=1)
    delivery_backoff_seconds: float = Field(default=2.0, gt=0)
    delivery_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    # Meta's rate-limit errors (codes 4, 17, 32, 613) name no retry time: wait at least this.
    meta_rate_limit_seconds: float = Field(default=60.0, ge=0)
    # Meta sent no answer (a read timeout): wait this long for the message's echo before
    # sending it again (an echo proves it was delivered).
    meta_echo_wait_seconds: float = Field(default=60.0, gt=0)
    # Webhooks to bots (noclash.channels.webhooks). Attempts before an event's delivery is
    # failed: with the backoff above, 25 span 7 to 14 hours (a bot down overnight still
    # gets its events). A request to a bot is bounded by platform_timeout_seconds.
    webhook_max_attempts: int = Field(default=25, ge=1)
    # Let a webhook_url point into noclash's own network (loopback, private, link-local,
    # ...): off, as anyone who can create a chatbot could otherwise make noclash call it.
    allow_private_webhooks: bool = False
    # Refuse a Messenger, Instagram or Telegram connection made without an access_token
    # (whose ownership noclash proves with the platform). Off: an inbound-only connection
    # needs none, as on a server one team runs. On, for tenants who do not trust each
    # other: Meta's webhooks are routed by page id, so whoever connects a page id first,
    # unproven, would receive that page's messages.
    require_access_token: bool = False

    # Live event streams (noclash.api.routes.stream, docs/events.md). A stream with nothing
    # to send for this long sends a ``: ping`` comment (FastAPI's own keep-alive, every
    # 15 s, stays underneath); it re-reads the events table at least this often even when
    # no wake-up came (a NOTIFY lost during a reconnect, other processes on one SQLite file).
    stream_ping_seconds: float = Field(default=15.0, gt=0)
    stream_reread_seconds: float = Field(default=2.0, gt=0)
    # PostgreSQL: after a commit that recorded events, send one coalesced NOTIFY from a
    # connection of its own, and LISTEN, so streams in other processes wake at once. Off:
    # they see this process's events at their next periodic re-read.
    events_notify: bool = True
    # Events older than this many days are deleted by the dispatchers, except one still on
    # its way to a webhook (unset: every event is kept). At most a century: the horizon
    # (now minus this) must be a time a datetime holds.
    event_retention_days: float | None = Field(default=None, gt=0, le=36500)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        # uvicorn treats a malformed entry as a literal host name that never matches, so a
        # typo would silently distrust the proxy (and every visitor would share its address).
        for item in filter(None, (part.strip() for part in value.split(","))):
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    @property
    def sqlalchemy_url(self) -> str:
        return normalise_database_url(self.database_url)


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
