"""Telegram Bot API webhooks: the secret token and the ``Update`` object.

``setWebhook(secret_token=...)`` makes Telegram send that token in the
``X-Telegram-Bot-Api-Secret-Token`` header of every update; it is the connection's
``secret``, compared in constant time. Telegram has no body signature, so the secret plus
the per-connection URL (``/webhooks/telegram/{connection_id}``) is the authentication.

An update with a message, as documented::

    {"update_id": 10000,
     "message": {"message_id": 1365, "date": 1441645532,
                 "chat": {"id": 1111111, "type": "private", "first_name": "Test"},
                 "from": {"id": 1111111, "is_bot": false, "first_name": "Test",
                          "username": "Test"},
                 "text": "/start"}}

The customer is the chat (``psid = str(chat.id)``), and the dedupe key is the chat and the
message's id (:func:`dedupe_key`): Telegram redelivers the same update, with the same
message, until it gets a 2xx. Other update
kinds (edited messages, callback queries, channel posts, member updates) are acknowledged
and ignored, and so are service messages (a ``message`` that only says what happened to
the chat: the bot added to a group, a pinned message, a group upgraded to a supergroup).

Sending (:class:`TelegramSender`) is ``sendMessage`` with ``chat_id`` = the customer. The Bot
API has no idempotency key and reports nothing back about sent messages, so a send whose
answer was lost cannot be settled: the delivery becomes ``unknown`` and is sent again
only on request.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from noclash.channels import InboundEvent, PayloadError, json_integer
from noclash.channels.sending import (
    GATEWAY_TIMEOUT,
    REQUEST_TIMEOUT,
    CredentialRejected,
    Outcome,
    Outgoing,
    PlatformUnreachable,
    SendResult,
    gateway_timeout,
    json_body,
    text_refusal,
    transport_result,
)
from noclash.db.tables import Channel

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# A bot token as BotFather issues it: the bot's id, a colon, a secret. It travels in the
# URL's path, so anything else (a "/", "?", "#" or "..") could turn a call into another.
TOKEN_SHAPE = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,200}")
NOT_A_BOT_TOKEN = (
    "not sent: the connection's access_token is not a Telegram bot token "
    "(<bot id>:<secret>); replace it with PATCH /api/connections/{id}"
)


def verify_secret(header: str | None, secret: str | None) -> bool:
    """True when the header equals the connection's secret (constant-time compare)."""
    if not header or not secret:
        return False
    return hmac.compare_digest(header.encode(), secret.encode())


# What a person can send besides text (the Bot API's ``Message`` content fields), most
# specific first: a GIF comes as ``animation`` *and* ``document``, a venue with its
# ``location``.
CONTENT_KINDS = (
    "animation", "photo", "video", "video_note", "voice", "audio", "document", "sticker",
    "story", "paid_media", "contact", "dice", "game", "poll", "checklist", "venue",
    "location", "invoice", "giveaway", "giveaway_winners",
)  # fmt: skip
# Service messages: Telegram reports what happened to the chat as a ``message`` with no
# content (the bot added to a group, a member leaving, a title changed, a pinned message,
# a group upgraded to a supergroup). Nobody wrote them: storing one made an empty
# customer message, and opened a conversation when the bot joined a group.
SERVICE_KINDS = frozenset({
    "new_chat_members", "new_chat_member", "new_chat_participant", "left_chat_member",
    "left_chat_participant", "new_chat_title", "new_chat_photo", "delete_chat_photo",
    "group_chat_created", "supergroup_chat_created", "channel_chat_created",
    "message_auto_delete_timer_changed", "migrate_to_chat_id", "migrate_from_chat_id",
    "pinned_message", "successful_payment", "refunded_payment", "users_shared",
    "chat_shared", "gift", "unique_gift", "connected_website", "write_access_allowed",
    "passport_data", "proximity_alert_triggered", "boost_added", "chat_background_set",
    "checklist_tasks_done", "checklist_tasks_added", "direct_message_price_changed",
    "forum_topic_created", "forum_topic_edited", "forum_topic_closed",
    "forum_topic_reopened", "general_forum_topic_hidden", "general_forum_topic_unhidden",
    "giveaway_created", "giveaway_completed", "paid_message_price_changed",
    "video_chat_scheduled", "video_chat_started", "video_chat_ended",
    "video_chat_participants_invited", "web_app_data",
})  # fmt: skip
# A message with none of the above (a content type newer than this list): stored with
# this text rather than dropped, since a person may have written it.
UNSUPPORTED_TEXT = "[unsupported message]"


def _text(message: dict[str, Any]) -> str | None:
    """The message's text, caption or a note of what it carries; None for a service
    message, which nobody wrote."""
    for key in ("text", "caption"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    for kind in CONTENT_KINDS:
        if kind in message:
            return f"[attachment: {kind}]"
    if not SERVICE_KINDS.isdisjoint(message):
        return None
    return UNSUPPORTED_TEXT


def _username(message: dict[str, Any]) -> str | None:
    sender = message.get("from")
    if not isinstance(sender, dict):
        return None
    if isinstance(sender.get("username"), str):
        return sender["username"]
    names = [sender.get(k) for k in ("first_name", "last_name")]
    joined = " ".join(n for n in names if isinstance(n, str) and n)
    return joined or None


def _date(value: Any) -> datetime | None:
    """``message.date`` (Unix seconds) as a time, or None when it is not one a calendar
    holds (negative or astronomically large): the message is still stored, at the time it
    arrived, rather than refused and redelivered forever."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def dedupe_key(update_id: int, chat_id: int, message_id: Any) -> str:
    """What makes a Telegram message the same message when it comes again:
    ``<chat id>:<message id>`` (a message id is unique within its chat, and a redelivered
    update carries the same message).

    Not ``update_id`` alone: Telegram numbers updates in sequence, but "if there are no new
    updates for at least a week, then identifier of the next update will be chosen
    randomly", and a random id equal to one stored before would have dropped a new message
    as a duplicate of an old one. An update without an integer ``message_id`` (none the Bot
    API sends) falls back to its ``update_id``, which never contains a colon."""
    number = json_integer(message_id)
    return f"{chat_id}:{number}" if number is not None else str(update_id)


def parse(update: Any) -> InboundEvent | None:
    """The customer message in ``update``, or None for update kinds that carry none.

    Raises :class:`PayloadError` when the body is not an ``Update``.
    """
    if not isinstance(update, dict):
        raise PayloadError("the body is not a JSON object")
    update_id = json_integer(update.get("update_id"))
    if update_id is None:
        raise PayloadError("update_id is missing or not an integer")
    message = update.get("message")
    if message is None:
        return None
    if not isinstance(message, dict):
        raise PayloadError("message is not an object")
    chat = message.get("chat")
    chat_id = json_integer(chat.get("id")) if isinstance(chat, dict) else None
    if chat_id is None:
        raise PayloadError("message.chat.id is missing or not an integer")
    text = _text(message)
    if text is None:
        return None
    return InboundEvent(
        channel=Channel.TELEGRAM,
        recipient_id=None,
        psid=str(chat_id),
        platform_message_id=dedupe_key(update_id, chat_id, message.get("message_id")),
        text=text,
        sent_at=_date(message.get("date")),
        username=_username(message),
    )


def migrated_chat(response: httpx.Response) -> int | None:
    """The chat id a refused send names as its chat's new one
    (``parameters.migrate_to_chat_id``: the group became a supergroup), or None."""
    if response.status_code != 400:
        return None
    parameters = json_body(response).get("parameters")
    moved = parameters.get("migrate_to_chat_id") if isinstance(parameters, dict) else None
    return json_integer(moved)


def _description(body: dict, status: int) -> str:
    code = body.get("error_code", status)
    return f"Telegram error {code}: {body.get('description') or 'no description'}"


def send_result(response: httpx.Response) -> SendResult:
    """Classify ``sendMessage``'s answer: ``ok`` is sent; 429 waits
    ``parameters.retry_after``; 400 (chat not found, text refused) and 403 (the bot was
    blocked) are final, as are 401 and 404 (the token is wrong); 5xx and 408 are retried,
    and so is an answer that is not the Bot API's (a proxy's page); but a 504 (a gateway
    gave up waiting) and a 2xx that is not ``ok`` may have been delivered."""
    body = json_body(response)
    status = response.status_code
    if response.is_success:
        result = body.get("result") if body.get("ok") is True else None
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            return SendResult(Outcome.SENT, platform_message_id=str(message_id))
        return SendResult(
            Outcome.AMBIGUOUS, error=f"Telegram answered HTTP {status} without a message_id"
        )
    detail = _description(body, status)
    if status == GATEWAY_TIMEOUT:
        return gateway_timeout(detail)
    if status == 429:
        parameters = body.get("parameters")
        wait = parameters.get("retry_after") if isinstance(parameters, dict) else None
        seconds = float(wait) if isinstance(wait, int | float) and wait >= 0 else None
        return SendResult(Outcome.RETRY, error=detail, retry_after=seconds)
    if status >= 500 or status == REQUEST_TIMEOUT or body.get("ok") is not False:
        return SendResult(Outcome.RETRY, error=detail)
    return SendResult(Outcome.FAILED, error=detail)


@dataclass(frozen=True)
class TelegramSender:
    """The Bot API at ``api_url`` (``https://api.telegram.org`` by default)."""

    api_url: str
    channel: Channel = Channel.TELEGRAM
    confirms_by_echo: bool = False

    async def send(self, client: httpx.AsyncClient, message: Outgoing) -> SendResult:
        """``sendMessage``; a stored token not shaped like a bot token (one written around
        the API's check, or before it existed) fails the delivery without a request: in
        the URL's path it could make the call another one."""
        if not TOKEN_SHAPE.fullmatch(message.access_token):
            return SendResult(Outcome.FAILED, error=NOT_A_BOT_TOKEN)
        refusal = text_refusal(self.channel, message.text)
        if refusal is not None:
            # Telegram answers 400 "message is too long" on every attempt.
            return SendResult(Outcome.FAILED, error=f"not sent: {refusal}")
        url = f"{self.api_url}/bot{message.access_token}/sendMessage"
        try:
            response = await client.post(
                url, json={"chat_id": message.recipient, "text": message.text}
            )
            moved_to = migrated_chat(response)
            if moved_to is not None:
                # A group upgraded to a supergroup has a new chat id, and Telegram refuses
                # (400, nothing delivered) to send to the old one, naming the new one: the
                # reply goes there, in the same attempt. Once: a second move is an answer.
                response = await client.post(url, json={"chat_id": moved_to, "text": message.text})
        except httpx.HTTPError as exc:
            return transport_result(exc)
        return send_result(response)

    async def owned_id(self, client: httpx.AsyncClient, *, access_token: str) -> str:
        """The id of the bot whose token this is (``getMe``); a string that is not shaped
        like a bot token is refused without asking."""
        if not TOKEN_SHAPE.fullmatch(access_token):
            raise CredentialRejected("not a Telegram bot token (<bot id>:<secret>)")
        try:
            response = await client.get(f"{self.api_url}/bot{access_token}/getMe")
        except httpx.TransportError as exc:
            raise PlatformUnreachable(
                f"Telegram could not be reached: {type(exc).__name__}"
            ) from exc
        if response.status_code >= 500:
            raise PlatformUnreachable(f"Telegram answered HTTP {response.status_code}")
        body = json_body(response)
        result = body.get("result")
        if body.get("ok") is not True or not isinstance(result, dict):
            raise CredentialRejected(_description(body, response.status_code))
        bot_id = result.get("id")
        if not isinstance(bot_id, int) or isinstance(bot_id, bool):
            raise CredentialRejected("Telegram did not say which bot this token is")
        return str(bot_id)


__all__ = ["SECRET_HEADER", "TelegramSender", "parse", "send_result", "verify_secret"]
