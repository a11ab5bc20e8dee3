"""``python -m bench.serve {noclash,minimal}``: the servers of the http scenario.

Each runs in its own process under uvicorn, with the same uvicorn settings (no access
log) and the same pool size, so the comparison is application against application:

- ``noclash``: the real app (:func:`noclash.api.app.create_app`): middlewares, bearer
  authentication, validation, :func:`noclash.chat.chatbots.create_chatbot`;
- ``minimal``: one FastAPI endpoint, no authentication and no middleware, that performs
  the same single ``INSERT INTO chatbots ... RETURNING`` for a fixed owner. It is the
  least a create can cost through this stack (FastAPI, uvicorn, SQLAlchemy, the driver).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from uuid import UUID

import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from noclash.config import Settings
from noclash.db.dialects import dialect_for
from noclash.db.engine import create_engine
from noclash.db.tables import chatbots
from noclash.db.types import utcnow
from noclash.unique import uuid4, uuid7

POOL_SIZE = 40


class MinimalIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


def minimal_app(engine: Engine, owner_id: UUID) -> FastAPI:
    """The stack's floor: parse a body, one INSERT ... RETURNING, answer the row."""
    app = FastAPI()
    insert = sa.insert(chatbots).returning(*chatbots.c)
    server_token = dialect_for(engine).server_generates_uuid4

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/chatbots", status_code=201)
    def create(body: MinimalIn) -> dict[str, Any]:
        values: dict[str, Any] = {
            "id": uuid7(),
            "owner_id": owner_id,
            "name": body.name,
            "slack_channel_id": None,
            "asana_project_id": None,
            "require_auth": False,
            "created_at": utcnow(),
        }
        if not server_token:
            values["public_token"] = uuid4()
        with engine.begin() as conn:
            row = conn.execute(insert, values).one()
        return {"id": row.id, "name": row.name, "public_token": row.public_token}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("app", choices=("noclash", "minimal"))
    parser.add_argument("--url", required=True, help="database URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--owner", help="owner id for the minimal app")
    parser.add_argument(
        "--no-events", action="store_true",
        help="events off for the app's engine (the events scenario's limit: the same build)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings(database_url=args.url, pool_size=POOL_SIZE, pool_max_overflow=10)
    engine = create_engine(settings.sqlalchemy_url, settings)
    if args.no_events:
        from noclash.chat.events import EVENTS_OPTION

        engine = engine.execution_options(**{EVENTS_OPTION: False})
    if args.app == "noclash":
        from noclash.api.app import create_app

        app = create_app(settings, engine=engine)
    else:
        app = minimal_app(engine, UUID(args.owner))
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
        backlog=1024,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
