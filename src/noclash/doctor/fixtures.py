"""Databases in each seed's broken state, on SQLite and PostgreSQL.

The tests run the doctor and the repairs against these, and the README's demo is
``python -m noclash.doctor.fixtures legacy.db`` followed by ``noclash doctor``. Every
builder is deterministic (fixed random seed) so reports and docs are reproducible.

========================  =====  ===============================================
fixture                   seed   broken state
========================  =====  ===============================================
``short-tokens``          000/1  6-char public tokens under a unique index, and two
                                 tokens equal but for case (a real collision for
                                 any case-insensitive lookup)
``closed-chat``           002    unique (instagramConnectionId, psid) on
                                 conversations that can be CLOSED
``closed-chat-unguarded`` 002    the seed's own "fix": no unique at all, and two
                                 OPEN conversations for one customer (needs
                                 ``--key support_conversations.page_connection_id,psid``)
``null-session-ids``      003    session ids NULL or empty under a unique index
                                 (NULLS NOT DISTINCT on PostgreSQL, where NULLs
                                 collide; on SQLite only the empty one does)
``colliding-slugs``       004    no unique index on slug, and colliding slugs (needs
                                 ``--key chat_threads.slug``: a name is no declaration)
``sequence-behind``       -      serial and identity columns behind imported ids
                                 (PostgreSQL only: SQLite has no sequences)
========================  =====  ===============================================
"""

from __future__ import annotations

import random
import string
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.config import normalise_database_url
from noclash.doctor.dialects import DOCTOR_DIALECTS, DoctorDialect, doctor_dialect

_T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _ts(i: int) -> str:
    return (_T0 + timedelta(minutes=i)).isoformat()


def _flags(conn: Connection) -> DoctorDialect:
    return doctor_dialect(conn)


def short_tokens(conn: Connection) -> None:
    rng = random.Random(0)
    conn.exec_driver_sql(
        "CREATE TABLE chatbots (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "public_token TEXT NOT NULL, require_auth BOOLEAN NOT NULL DEFAULT FALSE, "
        "created_at TEXT NOT NULL)"
    )
    conn.exec_driver_sql("CREATE UNIQUE INDEX chatbots_public_token_key ON chatbots (public_token)")
    alphabet = string.ascii_lowercase + string.digits
    tokens: list[str] = []
    seen: set[str] = set()
    while len(tokens) < 400:
        t = "".join(rng.choice(alphabet) for _ in range(6))
        if t not in seen:
            seen.add(t)
            tokens.append(t)
    tokens.append(tokens[6].upper())
    conn.execute(
        sa.text(
            "INSERT INTO chatbots (id, name, public_token, created_at) VALUES (:i, :n, :t, :c)"
        ),
        [{"i": i + 1, "n": f"bot {i + 1}", "t": t, "c": _ts(i)} for i, t in enumerate(tokens)],
    )


def closed_chat(conn: Connection) -> None:
    conn.exec_driver_sql(
        'CREATE TABLE conversations (id INTEGER PRIMARY KEY, "instagramConnectionId" TEXT '
        "NOT NULL, psid TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'OPEN' "
        "CHECK (status IN ('OPEN', 'SNOOZED', 'CLOSED')), "
        '"lastMessageAt" TEXT, "createdAt" TEXT NOT NULL)'
    )
    conn.exec_driver_sql(
        'CREATE UNIQUE INDEX "conversations_instagramConnectionId_psid_key" '
        'ON conversations ("instagramConnectionId", psid)'
    )
    conn.exec_driver_sql(
        'CREATE INDEX "conversations_instagramConnectionId_status_lastMessageAt_idx" '
        'ON conversations ("instagramConnectionId", status, "lastMessageAt")'
    )
    conn.exec_driver_sql(
        'CREATE TABLE messages (id INTEGER PRIMARY KEY, "conversationId" INTEGER NOT NULL '
        'REFERENCES conversations (id), body TEXT NOT NULL, "createdAt" TEXT NOT NULL)'
    )
    rows = []
    for i in range(30):
        status = "CLOSED" if i % 4 == 0 else ("SNOOZED" if i % 7 == 0 else "OPEN")
        rows.append(
            {
                "i": i + 1,
                "c": f"ig{i % 2 + 1}",
                "p": str(1170019054981000 + i),
                "s": status,
                "l": _ts(i + 100),
                "t": _ts(i),
            }
        )
    conn.execute(
        sa.text(
            'INSERT INTO conversations (id, "instagramConnectionId", psid, status, '
            '"lastMessageAt", "createdAt") VALUES (:i, :c, :p, :s, :l, :t)'
        ),
        rows,
    )
    conn.execute(
        sa.text(
            'INSERT INTO messages (id, "conversationId", body, "createdAt") VALUES (:i, :c, :b, :t)'
        ),
        [{"i": i + 1, "c": i % 30 + 1, "b": f"message {i + 1}", "t": _ts(i)} for i in range(90)],
    )


def closed_chat_unguarded(conn: Connection) -> None:
    """Seed 002 after its own "fix": the unique was dropped and duplicates are "checked in code".

    Two webhook deliveries raced past the code checks: psid 2001 has two OPEN conversations.
    Closed duplicates are legitimate. Intent needs ``--key
    support_conversations.page_connection_id,psid`` (psid is not a name the doctor guesses).
    """
    conn.exec_driver_sql(
        "CREATE TABLE support_conversations (id INTEGER PRIMARY KEY, "
        "page_connection_id TEXT NOT NULL, psid TEXT NOT NULL, status TEXT NOT NULL "
        "CHECK (status IN ('OPEN', 'SNOOZED', 'CLOSED')), last_message_at TEXT, "
        "created_at TEXT NOT NULL)"
    )
    conn.exec_driver_sql(
        "CREATE INDEX support_conversations_page_psid_status_idx "
        "ON support_conversations (page_connection_id, psid, status)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE support_messages (id INTEGER PRIMARY KEY, conversation_id INTEGER "
        "NOT NULL REFERENCES support_conversations (id), body TEXT NOT NULL)"
    )
    rows = [
        (1, "page1", "2001", "CLOSED", _ts(10)),
        (2, "page1", "2001", "OPEN", _ts(20)),
        (3, "page1", "2001", "OPEN", _ts(21)),
        (4, "page1", "2002", "CLOSED", _ts(5)),
        (5, "page1", "2002", "CLOSED", _ts(6)),
        (6, "page1", "2002", "OPEN", _ts(7)),
        (7, "page2", "2001", "OPEN", _ts(8)),
        (8, "page2", "2003", "SNOOZED", _ts(30)),
        (9, "page2", "2003", "OPEN", _ts(29)),
    ]
    conn.execute(
        sa.text(
            "INSERT INTO support_conversations (id, page_connection_id, psid, status, "
            "last_message_at, created_at) VALUES (:i, :c, :p, :s, :l, :l)"
        ),
        [{"i": i, "c": c, "p": p, "s": st, "l": ts} for i, c, p, st, ts in rows],
    )
    conn.execute(
        sa.text("INSERT INTO support_messages (id, conversation_id, body) VALUES (:i, :c, :b)"),
        [{"i": i + 1, "c": i % 9 + 1, "b": f"message {i + 1}"} for i in range(27)],
    )


def null_session_ids(conn: Connection) -> None:
    rng = random.Random(3)
    conn.exec_driver_sql(
        "CREATE TABLE chat_sessions (id INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL, "
        "session_id TEXT, user_id TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    nnd = " NULLS NOT DISTINCT" if _flags(conn).supports_nulls_not_distinct else ""
    conn.exec_driver_sql(
        f"CREATE UNIQUE INDEX chat_sessions_session_id_key ON chat_sessions (session_id){nnd}"
    )
    sessions: list[str | None] = [
        str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(40)
    ]
    # NULLS NOT DISTINCT (like MongoDB's unique index) admits one NULL; without it, many.
    sessions[5] = None
    sessions[11] = ""
    if not nnd:
        sessions[17] = None
        sessions[23] = None
    conn.execute(
        sa.text(
            "INSERT INTO chat_sessions (id, conversation_id, session_id, user_id, created_at) "
            "VALUES (:i, :c, :s, :u, :t)"
        ),
        [
            {"i": i + 1, "c": f"conv-{i + 1}", "s": s, "u": f"user-{i % 5}", "t": _ts(i)}
            for i, s in enumerate(sessions)
        ],
    )


def colliding_slugs(conn: Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE chat_threads (id INTEGER PRIMARY KEY, title TEXT NOT NULL, "
        "slug TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    titles = [
        ("Navigate to example.com", "navigate-example-website"),
        ("Hello world", "hello-world"),
        ("Navigate to example.com again", "navigate-example-website"),
        ("Navigate example", "navigate-example-website-2"),
        ("Book a table", "book-a-table"),
        ("Hello, world!", "hello-world"),
        ("Navigate to the example website", "navigate-example-website"),
    ] + [(f"Topic {i}", f"topic-{i}") for i in range(10)]
    conn.execute(
        sa.text("INSERT INTO chat_threads (id, title, slug, created_at) VALUES (:i, :t, :s, :c)"),
        [{"i": i + 1, "t": t, "s": s, "c": _ts(i)} for i, (t, s) in enumerate(titles)],
    )


def sequence_behind(conn: Connection) -> None:
    if not _flags(conn).has_sequences:
        return
    conn.exec_driver_sql("CREATE TABLE tickets (id serial PRIMARY KEY, subject text NOT NULL)")
    conn.exec_driver_sql(
        "CREATE TABLE imports (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
        "payload text NOT NULL)"
    )
    conn.execute(
        sa.text("INSERT INTO tickets (id, subject) VALUES (:i, :s)"),
        [{"i": i, "s": f"imported ticket {i}"} for i in range(1, 26)],
    )
    conn.execute(
        sa.text("INSERT INTO imports (id, payload) VALUES (:i, :p)"),
        [{"i": i, "p": f"row {i}"} for i in range(1, 11)],
    )


FIXTURES: dict[str, Callable[[Connection], None]] = {
    "short-tokens": short_tokens,
    "closed-chat": closed_chat,
    "closed-chat-unguarded": closed_chat_unguarded,
    "null-session-ids": null_session_ids,
    "colliding-slugs": colliding_slugs,
    "sequence-behind": sequence_behind,
}


# Fixtures whose broken state needs sequences (SQLite has none).
NEEDS_SEQUENCES = frozenset({"sequence-behind"})


def build(url: str, *names: str) -> str:
    """Create the named fixtures (all that apply when none is named) in the database at ``url``."""
    engine = sa.create_engine(normalise_database_url(url))
    try:
        with engine.begin() as conn:
            for name in names or applicable(conn.dialect.name):
                FIXTURES[name](conn)
    finally:
        engine.dispose()
    return url


def applicable(dialect: str) -> tuple[str, ...]:
    sequences = DOCTOR_DIALECTS.get(dialect).has_sequences
    return tuple(n for n in FIXTURES if sequences or n not in NEEDS_SEQUENCES)


def main(argv: list[str] | None = None) -> int:
    """``python -m noclash.doctor.fixtures PATH_OR_URL [FIXTURE...]``: build a legacy demo DB."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m noclash.doctor.fixtures PATH_OR_URL [FIXTURE...]"
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        print(usage)
        return 0 if args else 2
    if args[0].startswith("-"):  # an option, not a file: --help was built into "./--help"
        print(f"unknown option {args[0]}\n{usage}", file=sys.stderr)
        return 2
    target, names = args[0], args[1:]
    url = target if "://" in target else f"sqlite:///{target}"
    build(url, *names)
    dialect = sa.engine.make_url(normalise_database_url(url)).get_backend_name()
    print(f"built {', '.join(names or applicable(dialect))} in {url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
