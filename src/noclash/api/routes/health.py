"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from noclash.api.errors import RETRY_AFTER, problem
from noclash.api.problems import ProblemType
from noclash.api.responses import problems
from noclash.api.work import deliver
from noclash.db.dialects import dialect_for
from noclash.db.engine import read_only
from noclash.db.migrate import current_revision, head_revision, is_known

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    migration: str


@router.get("/healthz", response_model=Liveness)
async def healthz() -> dict:
    """The process is up (no database access)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=problems(ProblemType.NOT_READY))
async def readyz(request: Request) -> Response:
    """The database answers, accepts writes, and its schema is at the newest migration."""
    return await deliver(request, _ready)


def _ready(engine: Engine) -> Response:
    try:
        with read_only(engine).connect() as conn:
            conn.execute(text("SELECT 1"))
            writable = dialect_for(engine).accepts_writes(conn)
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        return problem(
            503,
            f"database unreachable: {type(exc).__name__}",
            kind=ProblemType.NOT_READY,
            headers=RETRY_AFTER,
        )
    if not writable:
        # Every webhook and every create writes: a process on a standby (after a failover)
        # or a database switched read-only can serve nothing a platform sends.
        return problem(
            503,
            "the database accepts no writes (read-only: a standby, or "
            "default_transaction_read_only)",
            kind=ProblemType.NOT_READY,
            headers=RETRY_AFTER,
        )
    head = head_revision()
    if current is not None and current != head and not is_known(current):
        # A newer noclash migrated the database under this running process: a rolling
        # upgrade (docs/deployment.md, "Upgrades"). Migrations add before they remove, so
        # this process goes on serving until it is restarted; a 503 here would make a load
        # balancer drop every old process before any new one is up. (A process started
        # on it is refused: `serve` checks once, at start.)
        return JSONResponse({"status": "ready", "migration": current})
    if current != head:
        return problem(
            503,
            f"database at migration {current or 'none'}, expected {head}",
            kind=ProblemType.NOT_READY,
        )
    return JSONResponse({"status": "ready", "migration": current})
