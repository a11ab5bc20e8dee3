"""Platform webhooks: ``/webhooks/meta`` (Messenger, Instagram) and ``/webhooks/telegram/{id}``.

Order of work for every POST: authenticate the raw bytes, parse the whole body, then store
each event through :func:`noclash.chat.inbound.receive_message` in its own transaction.
A bad or missing signature is a 401 before any parsing; a malformed body is a 400 before
any write. Everything else is a 200, including events for a page no connection knows
(logged): a non-2xx makes the platform retry, and retrying cannot fix an unknown page.
Because every event is deduplicated by its platform message id, a retry after a partial
failure stores only what is missing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.engine import Engine

from noclash.api.deps import get_engine, get_settings
from noclash.api.errors import problem
from noclash.channels import InboundEvent, PayloadError, meta, telegram
from noclash.chat.connections import connection_by_id, find_connection
from noclash.chat.inbound import receive_message
from noclash.config import Settings
from noclash.db.engine import read_only

log = logging.getLogger("noclash.webhooks")

router = APIRouter(tags=["webhooks"])


async def raw_body(request: Request) -> bytes:
    """The request body exactly as sent: signatures are computed over these bytes."""
    return await request.body()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("the request body is not valid JSON") from exc


def _bad_payload(exc: PayloadError) -> JSONResponse:
    return problem(400, str(exc), kind="malformed-payload")


def _store(engine: Engine, connection_id: Any, event: InboundEvent, max_text: int) -> bool:
    """Store one event; True if it was new."""
    result = receive_message(
        engine,
        connection_id=connection_id,
        psid=event.psid,
        platform_message_id=event.platform_message_id,
        text=event.text[:max_text],
        sent_at=event.sent_at,
        username=event.username,
    )
    return not result.duplicate


@router.get("/webhooks/meta", response_model=None)
def meta_verify(
    request: Request, settings: Settings = Depends(get_settings)
) -> PlainTextResponse | JSONResponse:
    """Meta's subscription check: echo ``hub.challenge`` if ``hub.verify_token`` matches."""
    challenge = meta.verify_subscription(dict(request.query_params), settings.meta_verify_token)
    if challenge is None:
        return problem(403, "hub.verify_token does not match", kind="verification-failed")
    return PlainTextResponse(challenge)


@router.post("/webhooks/meta", response_model=None)
def meta_receive(
    request: Request,
    body: bytes = Depends(raw_body),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict | JSONResponse:
    """Messenger (``object: page``) and Instagram (``object: instagram``) events."""
    secret = settings.meta_app_secret
    if not secret:
        log.error("POST /webhooks/meta refused: NOCLASH_META_APP_SECRET is not set")
        return problem(503, "the Meta channel is not configured", kind="not-configured")
    header = request.headers.get(meta.SIGNATURE_HEADER)
    if not meta.verify_signature(body, header, secret):
        return problem(
            401, f"{meta.SIGNATURE_HEADER} is missing or does not match", kind="bad-signature"
        )
    try:
        batch = meta.parse(_json(body))
    except PayloadError as exc:
        return _bad_payload(exc)
    stored = duplicates = unrouted = 0
    for event in batch.events:
        with read_only(engine).connect() as conn:
            connection = find_connection(conn, event.channel, event.recipient_id or "")
        if connection is None:
            unrouted += 1
            log.warning(
                "meta webhook: no %s connection for recipient %s (mid %s); acknowledged",
                event.channel, event.recipient_id, event.platform_message_id,
            )  # fmt: skip
            continue
        if _store(engine, connection.id, event, settings.max_text_length):
            stored += 1
        else:
            duplicates += 1
    return {
        "stored": stored,
        "duplicates": duplicates,
        "ignored": batch.ignored,
        "unrouted": unrouted,
    }


@router.post("/webhooks/telegram/{connection_id}", response_model=None)
def telegram_receive(
    connection_id: str,
    request: Request,
    body: bytes = Depends(raw_body),
    engine: Engine = Depends(get_engine),
    settings: Settings = Depends(get_settings),
) -> dict | JSONResponse:
    """One Telegram ``Update``, authenticated by the connection's secret token."""
    with read_only(engine).connect() as conn:
        connection = connection_by_id(conn, connection_id)
    if connection is None or connection.channel != "telegram":
        return problem(404, "no telegram connection at this URL", kind="not-found")
    if not telegram.verify_secret(request.headers.get(telegram.SECRET_HEADER), connection.secret):
        return problem(
            401, f"{telegram.SECRET_HEADER} is missing or does not match", kind="bad-signature"
        )
    try:
        event = telegram.parse(_json(body))
    except PayloadError as exc:
        return _bad_payload(exc)
    if event is None:
        return {"stored": 0, "duplicates": 0, "ignored": 1}
    new = _store(engine, connection.id, event, settings.max_text_length)
    return {"stored": int(new), "duplicates": int(not new), "ignored": 0}
