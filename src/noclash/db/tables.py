"""Every table of noclash, in SQLAlchemy Core.

Every uniqueness rule of the product is declared here, where the database enforces it:
primary keys are UUIDv7 (time-ordered, made by the application, no sequences), secrets and
public tokens are UUIDv4 with a unique index, and lifecycle rules are partial unique
indexes declared for both dialects (``postgresql_where`` and ``sqlite_where``). The
primitives in :mod:`noclash.unique` read these declarations to build ``ON CONFLICT``
targets and to name the field in a 409.

The migrations in ``db/migrations`` create exactly this schema; a test compares them.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TextClause,
    UniqueConstraint,
    Uuid,
    text,
)

from noclash.db.types import UTCDateTime

# Stable names, so that a PostgreSQL error's constraint_name maps back to a declaration and
# so that the doctor and the docs can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)



class Status(StrEnum):
    """A conversation's lifecycle state. OPEN and SNOOZED are *active*."""

    OPEN = "OPEN"
    SNOOZED = "SNOOZED"
    CLOSED = "CLOSED"


class Channel(StrEnum):
    """Where a connection's customers write from.

    ``custom`` is an integration of the chatbot's owner (an SMS gateway, an e-mail bridge)
    that posts messages to ``/api/connections/{id}/inbound``; its ``external_id`` is the
    integration's own name, unique within the chatbot. Every other channel is a platform
    whose ids are global (one page id, one bot, one public token).
    """

    MESSENGER = "messenger"
    INSTAGRAM = "instagram"
    TELEGRAM = "telegram"
    WIDGET = "widget"
    CUSTOM = "custom"


class Direction(StrEnum):
    """A message came from the customer (``in``) or goes to them (``out``)."""

    IN = "in"
    OUT = "out"


class DeliveryStatus(StrEnum):
    """Where an outgoing message stands with its platform (the outbox, ``deliveries``).

    ``queued`` waits for its turn (or its next attempt); ``sending`` is claimed by a
    dispatcher until its lease ends; ``sent`` the platform accepted it; ``failed`` the
    platform refused it for good (or every attempt was used); ``unknown`` the platform may
    have delivered it (the request went out and no answer came back) and noclash will not
    send it again on its own.
    """

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"


ACTIVE_STATUSES: tuple[Status, ...] = (Status.OPEN, Status.SNOOZED)
STATUSES: tuple[Status, ...] = tuple(Status)
CHANNELS: tuple[Channel, ...] = tuple(Channel)
DIRECTIONS: tuple[Direction, ...] = tuple(Direction)
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = tuple(DeliveryStatus)
# A delivery a dispatcher may still send: due when its next_attempt_at has passed (for
# ``sending``, next_attempt_at is the end of the claim's lease).
PENDING_DELIVERY: tuple[DeliveryStatus, ...] = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)
# Channels whose replies noclash sends to a platform (the others have no platform delivery:
# the widget reads its conversation, a custom integration reads the API).
SENDING_CHANNELS: tuple[Channel, ...] = (Channel.MESSENGER, Channel.INSTAGRAM, Channel.TELEGRAM)
# The destination of an event's delivery to its chatbot's webhook.
WEBHOOK_DESTINATION = "webhook"


def _sql_list(values: tuple[StrEnum, ...]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


_ACTIVE = text(f"status IN ({_sql_list(ACTIVE_STATUSES)})")
_UNCONNECTED_ACTIVE = text(f"connection_id IS NULL AND status IN ({_sql_list(ACTIVE_STATUSES)})")
_PLATFORM = text(f"channel <> '{Channel.CUSTOM.value}'")
_CUSTOM = text(f"channel = '{Channel.CUSTOM.value}'")
_SNOOZED = text(f"status = '{Status.SNOOZED.value}'")
_UNSEQUENCED = text("seq IS NULL")
_SEQUENCED = text("seq IS NOT NULL")
_PENDING = text(f"status IN ({_sql_list(PENDING_DELIVERY)})")


def _id() -> Column:
    return Column("id", Uuid, primary_key=True)


def _created_at() -> Column:
    return Column("created_at", UTCDateTime, nullable=False)


def _ref(name: str, table: str, *, ondelete: str, nullable: bool = True) -> Column:
    """A reference to ``table``'s primary key (every one is a UUID ``id``). ``ondelete`` is
    stated at each use: what a delete does to the rows that point at it (cascade, or
    keep them with NULL) is the rule, and it differs per column."""
    return Column(name, Uuid, ForeignKey(f"{table}.id", ondelete=ondelete), nullable=nullable)


def _partial_index(name: str, *columns: str, where: TextClause, unique: bool = False) -> Index:
    """An index over the rows ``where`` holds, with the same predicate on both dialects:
    declared once, a rule cannot be partial on one engine and whole on the other."""
    return Index(name, *columns, unique=unique, postgresql_where=where, sqlite_where=where)


users = Table(
    "users",
    metadata,
    _id(),
    Column("email", String(320), nullable=False),
    # sha256 of the API token; the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False),
    Column("is_admin", Boolean, nullable=False, server_default=text("false")),
    _created_at(),
    # Set when the token was revoked: the hash then belongs to a value nobody was shown.
    Column("token_revoked_at", UTCDateTime),
    UniqueConstraint("email"),
    UniqueConstraint("token_hash"),
)

chatbots = Table(
    "chatbots",
    metadata,
    _id(),
    _ref("owner_id", "users", ondelete="CASCADE", nullable=False),
    Column("name", String(200), nullable=False),
    # UUIDv4. On PostgreSQL the column default is gen_random_uuid() (see the migration);
    # FetchedValue tells SQLAlchemy the server may fill it.
    Column("public_token", Uuid, nullable=False, server_default=FetchedValue()),
    Column("require_auth", Boolean, nullable=False, server_default=text("false")),
    Column("slack_channel_id", String(200)),
    Column("asana_project_id", String(200)),
    _created_at(),
    # Where the chatbot's events are POSTed (the bot's own server), and the secret they are
    # signed with: made by the server, shown once (noclash.chat.events).
    Column("webhook_url", String(2000)),
    Column("webhook_secret", String(100)),
    # The event types the webhook is sent, a bit mask (noclash.chat.events.TYPE_BITS);
    # NULL: every type.
    Column("webhook_events", Integer),
    # The web origins whose pages may use the chatbot's widget API (a JSON list of
    # "scheme://host[:port]"); NULL: any origin (noclash.api.cors).
    Column("allowed_origins", JSON),
    UniqueConstraint("public_token"),
    Index("ix_chatbots_owner_id_id", "owner_id", "id"),
)

connections = Table(
    "connections",
    metadata,
    _id(),
    _ref("chatbot_id", "chatbots", ondelete="CASCADE", nullable=False),
    Column("channel", String(20), nullable=False),
    # The platform's id of the receiving side: page id, Instagram account id, bot id, for
    # the widget the chatbot's public token, for a custom channel the integration's name.
    Column("external_id", String(200), nullable=False),
    Column("secret", String(256)),
    _created_at(),
    # The platform credential replies are sent with (Meta: the Page access token, Telegram:
    # the bot token). Write-only through the API, proven to own external_id before it is
    # stored (noclash.channels.owners).
    Column("access_token", String(1000)),
    CheckConstraint(f"channel IN ({_sql_list(CHANNELS)})", name="channel"),
    # A platform's id names one receiver in the world: a page is one chatbot's, whoever
    # connects it first (webhooks route by it). A custom channel's id is a name its owner
    # chose ("sms", "email"): unique per chatbot only, so that one tenant's names cannot
    # block another's. Two partial unique indexes, one rule each.
    _partial_index(
        "uq_connections_channel_external_id", "channel", "external_id", where=_PLATFORM, unique=True
    ),
    _partial_index(
        "uq_connections_chatbot_id_external_id_custom",
        "chatbot_id",
        "external_id",
        where=_CUSTOM,
        unique=True,
    ),
    Index("ix_connections_chatbot_id_id", "chatbot_id", "id"),
)

conversations = Table(
    "conversations",
    metadata,
    _id(),
    _ref("chatbot_id", "chatbots", ondelete="CASCADE", nullable=False),
    # NULL for conversations created through the API without a channel.
    _ref("connection_id", "connections", ondelete="CASCADE"),
    Column("psid", String(200)),
    Column("status", String(10), nullable=False, server_default=text("'OPEN'")),
    Column("title", String(500)),
    # Current slug; every slug a conversation ever had is in conversation_slugs, which is
    # what keeps a former slug from being handed to another conversation.
    Column("slug", String(120), nullable=False),
    Column("last_message_at", UTCDateTime),
    Column("snoozed_until", UTCDateTime),
    _created_at(),
    Column("closed_at", UTCDateTime),
    CheckConstraint(f"status IN ({_sql_list(STATUSES)})", name="status"),
    UniqueConstraint("chatbot_id", "slug"),
    # At most one OPEN or SNOOZED conversation per (connection, psid), any number of CLOSED
    # ones: a partial unique index, as a plain one would forbid a customer's second
    # conversation and none would let two first messages each start one.
    _partial_index(
        "uq_conversations_active_connection_id_psid",
        "connection_id",
        "psid",
        where=_ACTIVE,
        unique=True,
    ),
    Index("ix_conversations_connection_id_psid_status", "connection_id", "psid", "status"),
    Index(
        "ix_conversations_connection_id_status_last_message_at",
        "connection_id",
        "status",
        "last_message_at",
    ),
    Index("ix_conversations_chatbot_id_id", "chatbot_id", "id"),
    # What the dispatcher's wake-up of due snoozes reads (partial: snoozed rows only).
    _partial_index("ix_conversations_snoozed_until", "snoozed_until", where=_SNOOZED),
    # The same rule for conversations created through the API with a psid and no connection
    # (and those a deleted connection left behind): one active conversation per customer of
    # the chatbot. The index above cannot hold them, as NULL connection_ids never collide.
    _partial_index(
        "uq_conversations_active_unconnected_chatbot_id_psid",
        "chatbot_id",
        "psid",
        where=_UNCONNECTED_ACTIVE,
        unique=True,
    ),
)

conversation_slugs = Table(
    "conversation_slugs",
    metadata,
    # The authority for slugs: a (chatbot, slug) pair is inserted once and never reused,
    # so old links keep resolving (308 to the current slug).
    _ref("chatbot_id", "chatbots", ondelete="CASCADE", nullable=False),
    Column("slug", String(120), nullable=False),
    _ref("conversation_id", "conversations", ondelete="CASCADE", nullable=False),
    _created_at(),
    PrimaryKeyConstraint("chatbot_id", "slug"),
    Index("ix_conversation_slugs_conversation_id", "conversation_id"),
)

messages = Table(
    "messages",
    metadata,
    _id(),
    _ref("conversation_id", "conversations", ondelete="CASCADE", nullable=False),
    _ref("connection_id", "connections", ondelete="CASCADE"),
    # The platform's message id (Meta mid, Telegram update_id, widget client_message_id):
    # the dedupe key of redelivered webhooks. NULL for agent replies.
    Column("platform_message_id", String(300)),
    Column("direction", String(3), nullable=False),
    Column("text", Text, nullable=False),
    Column("sent_at", UTCDateTime),
    _created_at(),
    CheckConstraint(f"direction IN ({_sql_list(DIRECTIONS)})", name="direction"),
    UniqueConstraint("connection_id", "platform_message_id"),
    Index("ix_messages_conversation_id_id", "conversation_id", "id"),
)

events = Table(
    "events",
    metadata,
    # What happened, once: written in the transaction that did it, unique per (type,
    # subject) so that no retry or race can announce one message twice. ``id`` is the
    # event's name everywhere (webhooks, streams, the pull API); ``seq`` is its place in
    # the order readers see, given after commit (noclash.chat.events: ids are made before
    # commit, so commit order can differ from id order; seq cannot).
    _id(),
    Column("seq", BigInteger),
    _ref("chatbot_id", "chatbots", ondelete="CASCADE", nullable=False),
    _ref("conversation_id", "conversations", ondelete="CASCADE"),
    Column("type", String(40), nullable=False),
    # What the event is about: a message id, a conversation id, a status change.
    Column("subject", String(100), nullable=False),
    Column("payload", JSON, nullable=False),
    _created_at(),
    UniqueConstraint("type", "subject"),
    # Readers ask for ``seq > n``; an event is written without one (migration 0009): the
    # indexes on seq hold the sequenced rows only, so a writer adds no entries to them.
    _partial_index("uq_events_seq", "seq", where=_SEQUENCED, unique=True),
    _partial_index("ix_events_unsequenced", "id", where=_UNSEQUENCED),
    _partial_index("ix_events_chatbot_id_seq", "chatbot_id", "seq", where=_SEQUENCED),
    _partial_index("ix_events_conversation_id_seq", "conversation_id", "seq", where=_SEQUENCED),
)

event_sequence = Table(
    "event_sequence",
    metadata,
    # The last ``seq`` given (noclash.chat.events.sequence), in one row: a counter that
    # only goes up. Numbering from ``max(events.seq)`` went back when the newest events
    # were deleted (a chatbot's deletion, the retention rule), and handed out numbers that
    # live readers had already passed (migration 0011).
    Column("one", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    CheckConstraint("one = 1", name="one_row"),
)

deliveries = Table(
    "deliveries",
    metadata,
    # The outbox: a reply to a platform customer is a message row and a delivery row,
    # written in one transaction, then sent by a dispatcher (noclash.dispatch). One delivery
    # per message per destination: a retried reply, a second dispatcher or a re-queue can
    # never make a second one.
    _id(),
    # What is delivered: a message to its platform, or an event to the chatbot's webhook.
    _ref("message_id", "messages", ondelete="CASCADE"),
    _ref("event_id", "events", ondelete="CASCADE"),
    # Where it goes: a sending channel's name, or ``webhook``.
    Column("destination", String(20), nullable=False),
    # Sends to one customer keep their order: a delivery waits while an older pending one
    # of the same conversation and destination exists.
    _ref("conversation_id", "conversations", ondelete="CASCADE", nullable=False),
    # Who receives it: the connection (NULL once deleted: the delivery then fails) and the
    # customer's id on the platform at the time of the reply.
    _ref("connection_id", "connections", ondelete="SET NULL"),
    Column("recipient", String(200)),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # queued: when the next attempt is due; sending: when the claim's lease ends.
    Column("next_attempt_at", UTCDateTime, nullable=False),
    # The claim that may settle it: a dispatcher whose lease ran out cannot overwrite the
    # outcome of the one that took the delivery over.
    Column("claimed_by", Uuid),
    Column("last_error", Text),
    Column("platform_message_id", String(300)),
    Column("sent_at", UTCDateTime),
    _created_at(),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(f"status IN ({_sql_list(DELIVERY_STATUSES)})", name="status"),
    CheckConstraint("(message_id IS NULL) <> (event_id IS NULL)", name="one_subject"),
    UniqueConstraint("message_id", "destination"),
    UniqueConstraint("event_id", "destination"),
    # What the dispatcher reads: due pending deliveries (partial, so the sent history costs
    # it nothing), and a conversation's older deliveries (also the foreign keys' index).
    _partial_index("ix_deliveries_due", "next_attempt_at", where=_PENDING),
    Index("ix_deliveries_conversation_id_id", "conversation_id", "id"),
    Index("ix_deliveries_connection_id", "connection_id"),
)

sessions = Table(
    "sessions",
    metadata,
    _id(),
    # NOT NULL, unique, UUIDv4 made by the server (database default on PostgreSQL), never
    # taken from the client: a key a client chooses can be chosen twice, and one it may omit
    # is left for code to fill in, which some path forgets.
    Column("session_id", Uuid, nullable=False, server_default=FetchedValue()),
    _ref("chatbot_id", "chatbots", ondelete="CASCADE", nullable=False),
    _ref("connection_id", "connections", ondelete="CASCADE", nullable=False),
    _ref("conversation_id", "conversations", ondelete="SET NULL"),
    _created_at(),
    UniqueConstraint("session_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    _id(),
    # Who sent the key: a user id, or a widget token plus session for public callers.
    Column("scope", String(200), nullable=False),
    Column("key", String(255), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", String(500), nullable=False),
    # sha256 of method, path and body: the same key with another request is a 422.
    Column("request_hash", String(64), nullable=False),
    # NULL while the first request is still executing.
    Column("response_status", Integer),
    Column("response_headers", JSON),
    Column("response_body", LargeBinary),
    _created_at(),
    Column("expires_at", UTCDateTime, nullable=False),
    UniqueConstraint("scope", "key"),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    # Fixed-window hit counters of noclash.api.ratelimit, shared by every process: one row
    # per (bucket, window), counted by INSERT ... ON CONFLICT DO UPDATE SET hits = hits + 1
    # RETURNING hits, so concurrent requests on any host each get a distinct count.
    Column("bucket", String(200), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("hits", Integer, nullable=False),
    # window_start leads: the purge deletes a range of old windows through this index, so
    # no second index has to be written for every new row. The conflict target
    # (bucket, window_start) names the same key.
    PrimaryKeyConstraint("window_start", "bucket"),
)



def max_length(column: Column) -> int:
    """The declared length of a ``String`` column: the one place an input limit is set.

    Request models and domain checks read it from here, so a limit changed in the schema
    (and its migration) changes everywhere at once, and nothing is silently truncated to a
    length restated somewhere else.
    """
    length = getattr(column.type, "length", None)
    if length is None:
        raise TypeError(f"{column} has no declared length")
    return int(length)


__all__ = [
    "ACTIVE_STATUSES",
    "CHANNELS",
    "DELIVERY_STATUSES",
    "DIRECTIONS",
    "PENDING_DELIVERY",
    "SENDING_CHANNELS",
    "STATUSES",
    "WEBHOOK_DESTINATION",
    "Channel",
    "DeliveryStatus",
    "Direction",
    "Status",
    "chatbots",
    "connections",
    "conversation_slugs",
    "conversations",
    "deliveries",
    "event_sequence",
    "events",
    "idempotency_keys",
    "max_length",
    "messages",
    "metadata",
    "rate_limits",
    "sessions",
    "users",
]
