"""Schemathesis hooks for ``tests/test_fuzz.py``: the fuzzer's credentials, and the
platforms' side of the webhooks.

Loaded by the ``schemathesis run`` process (``hooks`` in ``tests/schemathesis.toml``),
which reaches the database under test through ``NOCLASH_FUZZ_DATABASE_URL`` and knows the
server's Meta secrets from ``NOCLASH_META_APP_SECRET`` and ``NOCLASH_META_VERIFY_TOKEN``.

- **An administrator's token**, made the way an operator makes one
  (:func:`noclash.chat.users.create_user`), so every route, ``/api/users`` included, is
  reached. The fuzzer may revoke or rotate any user, itself included, as an administrator
  may: a revoked token answers 401, schemathesis asks for a token again, and a new
  administrator is made when the current token no longer works. Nothing is faked: the
  run just stays authenticated.
- **The platforms.** Only Meta and Telegram can authenticate a webhook, so without help
  every delivery would stop at the signature (401) and the parsers would never run. For
  each *positive* case (a body the document says is valid) this signs Meta's body with the
  app secret, gives Telegram's update the connection's own secret token (read from the
  database, as Telegram would have been given it), and gives Meta's subscription check the
  verify token. Negative cases stay unsigned: the signature is checked before the body is
  parsed, so they are refused (401) like a forgery, which is what the document says.
- **The promises a client makes** that a schema cannot state, kept in positive cases:
  the same ``Idempotency-Key`` means the same request (schemathesis draws keys like
  ``"0"`` for every create; a key reused for another request is the client's mistake, a
  documented 422 that ``tests/test_idempotency_api.py`` tests), so each drawn key is made
  unique, as a client makes one per operation (a replay returns the first answer, whose
  resource a stateful run may have deleted since: replays are tested there too); and a
  snooze's ``until`` is in the future (a time in the past is a documented 422).
- **No access token.** A connection's ``access_token`` is proven by asking its platform
  whose it is; the fuzzed server has no platform to ask (503 ``platform-unavailable``)
  and a drawn token belongs to nobody (422 naming it). Valid cases therefore leave it
  out; ``tests/test_connection_ownership.py`` tries tokens against the loopback platforms.
  Likewise a widget connection's ``external_id`` is its own chatbot's public token (a
  rule no schema can state), so a valid case that connects a widget names it, and a
  chatbot's ``webhook_url`` must lead to a public address, which the fuzzed server cannot
  resolve: valid cases leave it out (``tests/test_webhook_urls.py`` tries addresses).
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import schemathesis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from noclash.channels import meta, telegram
from noclash.chat.connections import connection_by_id
from noclash.chat.users import create_user, lookup_token
from noclash.db.engine import create_engine
from noclash.db.tables import chatbots
from noclash.unique.ids import parse_uuid, token_hash

# What Telegram allows in a secret_token (setWebhook): anything else could not be sent in
# a header, so no update for such a connection can be authenticated.
_TELEGRAM_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


@cache
def _engine() -> Engine:
    return create_engine(os.environ["NOCLASH_FUZZ_DATABASE_URL"])


class _Admin:
    """The current administrator's token; a new administrator when it stops working."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.lock = threading.Lock()

    def current(self) -> str:
        with self.lock:
            engine = _engine()
            if self.token is None or lookup_token(engine, token_hash(self.token)) is None:
                email = f"fuzz-admin-{uuid.uuid4().hex[:12]}@example.com"
                _user, self.token = create_user(engine, email, is_admin=True)
            return self.token


_ADMIN = _Admin()


@schemathesis.auth()
class AdminToken:
    """``Authorization: Bearer`` with an administrator's token (see the module docstring)."""

    def get(self, case: Any, context: Any) -> str:
        return _ADMIN.current()

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _positive(case: Any) -> bool:
    meta_ = getattr(case, "meta", None)
    return meta_ is None or not meta_.generation.mode.is_negative


def _keep_the_key_promise(case: Any) -> None:
    headers = case.headers or {}
    name = next((h for h in headers if h.lower() == "idempotency-key"), None)
    if name is None:
        return
    if not any(h.lower() == "authorization" for h in headers):
        # Without a token the key must be a UUID (it is the caller's only secret).
        key = str(uuid.uuid4())
    else:
        key = f"{str(headers[name])[:200]}-{uuid.uuid4().hex}"
    case.headers = {**headers, name: key}


def _keep_the_snooze_promise(case: Any) -> None:
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("until"), str):
        return
    try:
        until = datetime.fromisoformat(body["until"].replace("z", "Z"))
    except ValueError:
        return
    if until.tzinfo is not None and until <= datetime.now(UTC) + timedelta(minutes=1):
        case.body = {**body, "until": (datetime.now(UTC) + timedelta(days=1)).isoformat()}


def _keep_the_widget_promise(case: Any) -> None:
    ident = parse_uuid(str((case.path_parameters or {}).get("chatbot_id", "")))
    if ident is None:
        return
    with _engine().connect() as conn:
        token = conn.execute(
            sa.select(chatbots.c.public_token).where(chatbots.c.id == ident)
        ).scalar()
    if token is not None:
        case.body = {**case.body, "external_id": str(token)}


_CHATBOT_WRITES = {("POST", "/api/chatbots"), ("PATCH", "/api/chatbots/{chatbot_id}")}
_CONNECTION_WRITES = {
    ("POST", "/api/chatbots/{chatbot_id}/connections"),
    ("PATCH", "/api/connections/{connection_id}"),
}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Play the platforms' part and keep the client's promises in valid cases (see the
    module docstring); a negative case is sent as drawn."""
    if not _positive(case):
        return
    _keep_the_key_promise(case)
    operation = (case.method.upper(), case.path)
    if operation in _CHATBOT_WRITES and isinstance(case.body, dict):
        case.body = {k: v for k, v in case.body.items() if k != "webhook_url"}
    if operation in _CONNECTION_WRITES and isinstance(case.body, dict):
        case.body = {k: v for k, v in case.body.items() if k != "access_token"}
        if case.body.get("channel") == "widget":
            _keep_the_widget_promise(case)
    if operation == ("POST", "/api/conversations/{conversation_id}/snooze"):
        _keep_the_snooze_promise(case)
    elif operation == ("POST", "/webhooks/meta") and isinstance(case.body, dict | list):
        # Sign exactly the bytes that are sent: they are given here, not re-serialised.
        body = json.dumps(case.body).encode()
        kwargs["data"] = body
        secret = os.environ["NOCLASH_META_APP_SECRET"]
        case.headers = {**(case.headers or {}), meta.SIGNATURE_HEADER: meta.sign(body, secret)}
    elif operation == ("POST", "/webhooks/telegram/{connection_id}"):
        ident = str((case.path_parameters or {}).get("connection_id", ""))
        with _engine().connect() as conn:
            connection = connection_by_id(conn, ident)
        secret = connection.secret if connection is not None else None
        if secret and _TELEGRAM_SECRET.fullmatch(secret):
            case.headers = {**(case.headers or {}), telegram.SECRET_HEADER: secret}
    elif operation == ("GET", "/webhooks/meta") and isinstance(case.query, dict):
        case.query = {**case.query, "hub.verify_token": os.environ["NOCLASH_META_VERIFY_TOKEN"]}
