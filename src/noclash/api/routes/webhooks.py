"""Platform webhooks: ``/webhooks/meta`` (Messenger, Instagram) and ``/webhooks/telegram/{id}``.

Order of work for every POST: authenticate the raw bytes, parse the whole body, then store
each event through :func:`noclash.chat.inbound.receive_message` in its own transaction.
A bad or missing signature is a 401 before any parsing; a malformed body is a 400 before
any write (a body nested too deep for any parser never gets here: see
:mod:`noclash.api.limits`). Everything else is a 200, including events for a page no
connection knows (logged): a non-2xx makes the platform retry, and retrying cannot fix an
unknown page. Meta's echoes settle noclash's own sends (``message.metadata`` is the
delivery id) and store, once, what a person sent from the Page inbox. Because every event
is deduplicated by its platform message id, a retry after a partial failure stores only
what is missing.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from starlette.responses import Response

from noclash.api.deps import SettingsDep
from noclash.api.errors import problem
from noclash.api.problems import ProblemType
from noclash.api.responses import problems
from noclash.api.work import deliver, reading
from noclash.channels import InboundEvent, PayloadError, meta, telegram
from noclash.chat import outbox
from noclash.chat.connections import connection_by_id, find_connection
from noclash.chat.errors import InvalidInput
from noclash.chat.inbound import check_ids, receive_message
from noclash.chat.messages import record_page_message
from noclash.config import Settings
from noclash.db.tables import Channel
from noclash.unique.ids import parse_uuid

log = logging.getLogger("noclash.webhooks")

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def raw_body(request: Request) -> bytes:
    """The request body exactly as sent: signatures are computed over these bytes."""
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]


# -- what the OpenAPI document says of the webhooks ---------------------------------------
# The routes read the raw bytes (a signature covers them), so FastAPI knows no body model:
# the bodies are described here, as the platforms document them and as far as the parsers
# (noclash.channels) rely on them. Any other field is allowed and ignored
# (additionalProperties), as the platforms add fields without notice. A schema may say
# more than its parser checks (it describes what the platform sends), never less: a body
# it calls valid is accepted (tests/test_fuzz.py signs such bodies and checks it).

# Telegram's ids are 64-bit integers (1 and 1.0 alike: one JSON number).
_INT64 = {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
_PLATFORM_ID = {"type": ["string", "integer"], "minLength": 1, "description": "An id."}
_HAS_ID = {
    "anyOf": [
        _PLATFORM_ID,
        {"type": "object", "required": ["id"], "properties": {"id": _PLATFORM_ID}},
    ]
}
META_EVENT = {
    "type": "object",
    "description": "One messaging event. One with a `message` (not `is_echo`, not "
    "`is_deleted`) is a customer message and is stored; any other is acknowledged.",
    "properties": {
        "sender": {**_HAS_ID, "description": "The customer: `{id: PSID}`."},
        "recipient": {
            **_HAS_ID,
            "description": "The page: `{id: PAGE_ID}` (the entry's id when absent).",
        },
        "timestamp": {"description": "Milliseconds since the epoch (ignored unless a number)."},
        "message": {
            "type": "object",
            "properties": {
                "mid": {"type": "string", "minLength": 1, "description": "Dedupe key."},
                "text": {"description": "The text (attachments are stored as a note)."},
            },
        },
    },
    # A customer message names the customer, the page and its own id: the parser refuses
    # it otherwise (the page may be the entry's id instead; described as Meta sends it).
    "if": {"required": ["message"], "properties": {"message": {"type": "object"}}},
    "then": {
        "required": ["sender", "recipient", "message"],
        "properties": {"message": {"required": ["mid"]}},
    },
}
META_BODY = {
    "type": "object",
    "additionalProperties": True,
    "required": ["object", "entry"],
    "properties": {
        "object": {
            "type": "string",
            "description": "`page` (Messenger) or `instagram`; "
            "any other is acknowledged and ignored.",
        },
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {**_PLATFORM_ID, "description": "The page's id."},
                    "time": {"description": "Milliseconds since the epoch."},
                    "messaging": {"type": "array", "items": META_EVENT},
                },
            },
        },
    },
}
TELEGRAM_BODY = {
    "type": "object",
    "additionalProperties": True,
    "required": ["update_id"],
    "properties": {
        "update_id": {
            **_INT64,
            "description": "The update's number (the dedupe key is the chat and message_id).",
        },
        "message": {
            "type": "object",
            "description": "A customer message; an update without one, or a service "
            "message (`new_chat_members`, `migrate_to_chat_id`, `pinned_message`, ...), is "
            "acknowledged.",
            "required": ["chat"],
            "properties": {
                "message_id": {
                    "type": "integer",
                    "description": "With chat.id, the dedupe key (update_id without it).",
                },
                "date": {"description": "Seconds since the epoch (ignored unless an integer)."},
                "chat": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {**_INT64, "description": "The customer."}},
                },
                "from": {
                    "type": "object",
                    "description": "Its username or names title a new conversation.",
                },
                "text": {"description": "The text (or caption; attachments are a note)."},
            },
        },
    },
}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}  # fmt: skip


def _query(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "query", "required": True, "description": description,
            "schema": schema}  # fmt: skip


class MetaReceipt(BaseModel):
    """What a Meta delivery did: customer messages stored and already stored, events
    acknowledged without storing, messages for a page no connection knows."""

    stored: int
    duplicates: int
    ignored: int
    unrouted: int


class TelegramReceipt(BaseModel):
    stored: int
    duplicates: int
    ignored: int


def _json(body: bytes) -> Any:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("the request body is not valid JSON") from exc
    # JSON may escape a lone UTF-16 surrogate ("\ud83d" without its pair), which no
    # database can store as UTF-8: every string gets U+FFFD in its place, ids included
    # (a redelivery maps to the same id), so the platform never gets an error to retry.
    return _storable(parsed) if _SURROGATE_ESCAPE.search(body) else parsed


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


def _bad_payload(exc: PayloadError) -> JSONResponse:
    return problem(400, str(exc), kind=ProblemType.MALFORMED_PAYLOAD)


def _bad_signature(header: str) -> JSONResponse:
    """The 401 of a platform whose authenticating ``header`` is absent or wrong; it names
    the header, never what was expected."""
    return problem(401, f"{header} is missing or does not match", kind=ProblemType.BAD_SIGNATURE)


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


@router.get(
    "/meta",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "Verified: the body is `hub.challenge`, echoed"},
        **problems(ProblemType.VERIFICATION_FAILED),
    },
    openapi_extra={"parameters": [_query("hub.mode", "`subscribe`", ["subscribe"]),
                                  _query("hub.verify_token", "NOCLASH_META_VERIFY_TOKEN"),
                                  _query("hub.challenge", "What to echo")]},
)  # fmt: skip
async def meta_verify(request: Request, settings: SettingsDep) -> Response:
    """Meta's subscription check: echo ``hub.challenge`` if ``hub.verify_token`` matches."""
    challenge = meta.verify_subscription(dict(request.query_params), settings.meta_verify_token)
    if challenge is None:
        return problem(403, "hub.verify_token does not match", kind=ProblemType.VERIFICATION_FAILED)
    return PlainTextResponse(challenge)


@router.post(
    "/meta",
    response_model=MetaReceipt,
    responses=problems(
        ProblemType.MALFORMED_PAYLOAD, ProblemType.BAD_SIGNATURE, ProblemType.NOT_CONFIGURED
    ),
    openapi_extra={
        "parameters": [_header(meta.SIGNATURE_HEADER, "`sha256=` and the HMAC-SHA256 of the "
                               "raw body under NOCLASH_META_APP_SECRET, in hex")],
        "requestBody": _json_body(META_BODY, "Meta's webhook body, read as raw bytes (the "
                                  "signature covers them); Messenger and Instagram"),
    },
)  # fmt: skip
async def meta_receive(request: Request, body: RawBody, settings: SettingsDep) -> Response:
    """Messenger (``object: page``) and Instagram (``object: instagram``) events."""
    header = request.headers.get(meta.SIGNATURE_HEADER)
    return await deliver(request, _meta, body, header, settings)


def _meta(engine: Engine, body: bytes, header: str | None, settings: Settings) -> Response:
    secret = settings.meta_app_secret
    if not secret:
        log.error("POST /webhooks/meta refused: NOCLASH_META_APP_SECRET is not set")
        return problem(503, "the Meta channel is not configured", kind=ProblemType.NOT_CONFIGURED)
    if not meta.verify_signature(body, header, secret):
        return _bad_signature(meta.SIGNATURE_HEADER)
    try:
        batch = meta.parse(_json(body))
    except PayloadError as exc:
        return _bad_payload(exc)
    valid, invalid = _valid(batch.events)
    storable = {id(event) for event in valid}
    counts = dict.fromkeys(("stored", "duplicate", "unrouted", "settled", "invalid"), 0)
    counts["invalid"] = invalid
    # Customer messages and echoes in the body's order (a batch can hold a customer's
    # message, a Page inbox answer and the customer's next message): messages are listed
    # in the order they are stored.
    for item in batch.items:
        if isinstance(item, meta.Echo):
            counts[_echo(engine, item, settings.max_text_length)] += 1
        elif id(item) in storable:
            counts[_customer_message(engine, item, settings.max_text_length)] += 1
    return JSONResponse(
        {"stored": counts["stored"], "duplicates": counts["duplicate"],
         "ignored": batch.ignored, "unrouted": counts["unrouted"],
         "settled": counts["settled"], "invalid": counts["invalid"]}
    )  # fmt: skip


def _customer_message(engine: Engine, event: InboundEvent, max_text: int) -> str:
    """Store one customer message of a Meta body: ``stored``, ``duplicate`` (a
    redelivery) or ``unrouted`` (no connection has its page)."""
    with reading(engine) as conn:
        connection = find_connection(conn, event.channel, event.recipient_id or "")
    if connection is None:
        log.warning(
            "meta webhook: no %s connection for recipient %s (mid %s); acknowledged",
            event.channel, event.recipient_id, event.platform_message_id,
        )  # fmt: skip
        return "unrouted"
    return "stored" if _store(engine, connection.id, event, max_text) else "duplicate"


def _valid(batch: list[InboundEvent]) -> tuple[list[InboundEvent], int]:
    """The events of a body that can be stored, checked before the first is stored, and
    how many cannot. Those are logged and acknowledged: no retry can make a 201-character
    sender id storable, and answering 4xx would make the platform retry the whole body
    (its valid events included) forever."""
    valid: list[InboundEvent] = []
    for event in batch:
        try:
            check_ids(event.psid, event.platform_message_id, event.sent_at)
        except InvalidInput as exc:
            log.warning(
                "%s webhook: event %r refused, %s; acknowledged",
                event.channel, event.platform_message_id[:80], exc,
            )  # fmt: skip
            continue
        valid.append(event)
    return valid, len(batch) - len(valid)


def _echo(engine: Engine, echo: meta.Echo, max_text: int) -> str:
    """Handle one echo: ``settled`` (a noclash send confirmed), ``stored`` (a message sent
    from the Page inbox, stored once), ``duplicate`` (seen before), ``invalid`` (ids that
    can never be stored) or ``unrouted``."""
    try:
        # As for the events: what can never be stored is logged and acknowledged, never a
        # 4xx that would make Meta send the whole body again, forever.
        check_ids(echo.psid, echo.mid)
        if not 0 < len(echo.page_id) <= 200 or "\x00" in echo.page_id:
            raise InvalidInput("the page id must be 1 to 200 characters, no NUL", field="page_id")
    except InvalidInput as exc:
        log.warning("meta webhook: echo %r refused, %s; acknowledged", echo.mid[:80], exc)
        return "invalid"
    delivery_id = parse_uuid(echo.metadata) if echo.metadata else None
    with engine.begin() as conn:
        if delivery_id is not None and outbox.is_own_delivery(
            conn, delivery_id, channel=echo.channel, page_id=echo.page_id, psid=echo.psid
        ):
            # Our own message coming back: it proves the send, and is not a new message.
            settled = outbox.settle_by_echo(conn, delivery_id, echo.mid)
            return "settled" if settled else "duplicate"
        connection = find_connection(conn, echo.channel, echo.page_id)
        if connection is None:
            log.warning(
                "meta webhook: no %s connection for echo from %s (mid %s); acknowledged",
                echo.channel, echo.page_id, echo.mid,
            )  # fmt: skip
            return "unrouted"
        stored = record_page_message(
            conn,
            connection,
            psid=echo.psid,
            platform_message_id=echo.mid,
            text=echo.text[:max_text],
            sent_at=echo.sent_at,
        )
    return "stored" if stored is not None else "duplicate"


@router.post(
    "/telegram/{connection_id}",
    response_model=TelegramReceipt,
    responses=problems(ProblemType.MALFORMED_PAYLOAD, ProblemType.BAD_SIGNATURE),
    openapi_extra={
        "parameters": [_header(telegram.SECRET_HEADER, "The connection's secret, as given "
                               "to setWebhook(secret_token=...)")],
        "requestBody": _json_body(TELEGRAM_BODY, "One Telegram Update, read as raw bytes"),
    },
)  # fmt: skip
async def telegram_receive(
    request: Request, connection_id: str, body: RawBody, settings: SettingsDep
) -> Response:
    """One Telegram ``Update``, authenticated by the connection's secret token."""
    header = request.headers.get(telegram.SECRET_HEADER)
    return await deliver(request, _telegram, connection_id, body, header, settings)


def _telegram(
    engine: Engine, connection_id: str, body: bytes, header: str | None, settings: Settings
) -> Response:
    with reading(engine) as conn:
        connection = connection_by_id(conn, connection_id)
    if connection is None or connection.channel != Channel.TELEGRAM:
        return problem(404, "no telegram connection at this URL", kind=ProblemType.NOT_FOUND)
    if not telegram.verify_secret(header, connection.secret):
        return _bad_signature(telegram.SECRET_HEADER)
    try:
        event = telegram.parse(_json(body))
    except PayloadError as exc:
        return _bad_payload(exc)
    if event is None:
        return JSONResponse({"stored": 0, "duplicates": 0, "ignored": 1, "invalid": 0})
    valid, invalid = _valid([event])
    if not valid:
        return JSONResponse({"stored": 0, "duplicates": 0, "ignored": 0, "invalid": invalid})
    new = _store(engine, connection.id, event, settings.max_text_length)
    return JSONResponse(
        {"stored": int(new), "duplicates": int(not new), "ignored": 0, "invalid": 0}
    )
