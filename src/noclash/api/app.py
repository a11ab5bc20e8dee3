"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine

from noclash import __version__
from noclash.api import errors, openapi
from noclash.api.cors import WidgetCORSMiddleware
from noclash.api.disconnects import StreamDisconnects
from noclash.api.head import HeadAsGet
from noclash.api.idempotency import IdempotencyMiddleware
from noclash.api.limits import BodyLimitMiddleware
from noclash.api.ratelimit import RateLimitMiddleware
from noclash.api.routes import (
    chatbots,
    connections,
    conversations,
    events,
    health,
    messages,
    pages,
    stream,
    users,
    webhooks,
    widget,
)
from noclash.api.schemas import no_nul_parameters
from noclash.chat.users import TokenCache
from noclash.chat.wakeups import Hub
from noclash.config import Settings
from noclash.db.engine import create_engine
from noclash.web import STATIC

# One module per resource; a resource created under its parent has a second router with
# the parent's prefix (``/api/chatbots/{chatbot_id}/connections``...).
ROUTERS = [
    health.router,
    chatbots.router,
    chatbots.public,
    connections.nested,
    connections.router,
    conversations.nested,
    conversations.router,
    messages.router,
    messages.items,
    events.router,
    events.nested,
    stream.router,
    widget.router,
    stream.widget,
    webhooks.router,
    users.router,
    pages.router,
]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Last: a dispatcher wrapped around this lifespan (noclash.cli) has stopped by now, and
    # its final wake-ups are sent before the hub's threads end.
    app.state.hub.close()


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the app on ``engine`` (or one made from ``settings``).

    The app holds no state beyond its engine: several processes on several hosts can
    serve the same database, and every uniqueness rule is decided there. Its wake-up hub
    (``app.state.hub``, :mod:`noclash.chat.wakeups`) only makes live streams look at the
    database sooner; its threads start on first use and stop with the lifespan.
    """
    settings = settings or Settings()
    app = FastAPI(
        lifespan=_lifespan,
        title="noclash",
        version=__version__,
        description="Chat backend where a duplicate key is never a 500.",
        # Every route, today's and tomorrow's: a NUL in a query or path parameter is the
        # same 422 on both databases.
        dependencies=[Depends(no_nul_parameters)],
    )
    app.state.settings = settings
    app.state.engine = engine or create_engine(settings.sqlalchemy_url, settings)
    app.state.token_cache = TokenCache(ttl=settings.auth_cache_seconds)
    app.state.hub = Hub(app.state.engine, notify=settings.events_notify)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount(pages.STATIC_PATH, StaticFiles(directory=STATIC), name="static")
    # Every answer of every route in /openapi.json, derived from the routes themselves.
    openapi.install(app)
    # Outermost last: the body limits run first, so the idempotency middleware (which
    # reads and hashes bodies) never sees one too large or nested too deep.
    # Innermost: a client that leaves a stream is no error (see StreamDisconnects).
    app.add_middleware(StreamDisconnects)
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_webhook_body_bytes=settings.max_webhook_body_bytes,
    )
    # A refused request reads no body, and a 429 is never an idempotent answer.
    app.add_middleware(RateLimitMiddleware, engine=app.state.engine, settings=settings)
    # Outermost: a page of another site is refused (or its preflight answered) before
    # anything counts or runs.
    app.add_middleware(WidgetCORSMiddleware, engine=app.state.engine)
    # Around everything: a HEAD runs as its GET, through every layer, and loses its body.
    app.add_middleware(HeadAsGet)
    return app
