"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from noclash.api.errors import RETRY_AFTER, problem
from noclash.api.work import deliver
from noclash.db.engine import read_only
from noclash.db.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up (no database access)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> Response:
    """The database answers and its schema is at the newest migration."""
    return await deliver(request, _ready)


def _ready(engine: Engine) -> Response:
    try:
        with read_only(engine).connect() as conn:
            conn.execute(text("SELECT 1"))
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        return problem(
            503,
            f"database unreachable: {type(exc).__name__}",
            kind="not-ready",
            headers=RETRY_AFTER,
        )
    head = head_revision()
    if current != head:
        return problem(
            503,
            f"database at migration {current or 'none'}, expected {head}",
            kind="not-ready",
        )
    return JSONResponse({"status": "ready", "migration": current})
