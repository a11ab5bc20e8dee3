"""``python -m bench.overhead``: where noclash's time goes, one thread, no contention.

The main run says *how much* slower or faster noclash is; this says *why*, by timing the
pieces the profiles (cProfile of each contender's op) pointed at. The pieces take turns
call by call in a shuffled order (:func:`interleaved_us`), so that the shared machine's
swings hit them alike; the figures are means in microseconds:

- the same chatbot row written as noclash writes it (``insert().values(dict)
  .returning(*columns)`` built per call) and as a prebuilt statement with bound
  parameters, with and without RETURNING;
- building (not executing) the one-statement slug claim of
  :mod:`noclash.chat.conversations` on PostgreSQL, a data-modifying CTE;
- the per-request extras of the HTTP route: bearer authentication (its own pool checkout
  and SELECT) and one hop to the thread pool per synchronous dependency;
- the inbound message (:func:`measure_inbound`): the limit, the limit plus its touch of
  ``last_message_at``, and each path of ``receive_message``, measured interleaved;
- what an event row costs SQLite itself (:func:`measure_sqlite_event_writes`): a message
  alone, with its event as a second statement, and with its event written by a trigger.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from bench.databases import DIALECTS, Databases, noclash_engine
from bench.scenarios import make_owner
from noclash.chat.chatbots import create_chatbot
from noclash.chat.conversations import insert_conversation
from noclash.chat.events import MESSAGE_FIELDS
from noclash.chat.inbound import receive_message
from noclash.chat.sql import sql_for
from noclash.chat.users import authenticate, create_user
from noclash.db.dialects import dialect_for
from noclash.db.tables import chatbots, conversation_slugs, conversations, events, messages
from noclash.db.types import utcnow
from noclash.unique import uuid4, uuid7
from noclash.unique.slugs import slugify


def _slug_claim_statement() -> sa.Select[Any]:
    """The PostgreSQL slug claim (``noclash.chat.sql.postgresql.claim_statement``) built
    anew with its values inlined: what an attempt costs when its statement is not cached."""
    values = {
        "id": uuid7(), "chatbot_id": uuid7(), "connection_id": None, "psid": None,
        "status": "OPEN", "title": "Weekly support sync", "slug": "weekly-support-sync",
        "created_at": utcnow(), "closed_at": None,
    }
    new = (
        pg_insert(conversations).values(values).on_conflict_do_nothing()
        .returning(*conversations.c).cte("new")
    )
    registered = (
        pg_insert(conversation_slugs)
        .from_select(
            ["chatbot_id", "slug", "conversation_id", "created_at"],
            sa.select(new.c.chatbot_id, new.c.slug, new.c.id, new.c.created_at),
        )
        .on_conflict_do_nothing()
        .returning(conversation_slugs.c.conversation_id)
        .cte("registered")
    )
    return sa.select(
        *new.c, registered.c.conversation_id.is_not(None).label("slug_registered")
    ).select_from(new.outerjoin(registered, sa.true()))


def _prebuilt_slug_claim() -> sa.Select[Any]:
    """The statement noclash now executes: built once with bind parameters (the fix)."""
    from noclash.chat.sql.postgresql import claim_statement

    return claim_statement(pg_insert)


def measure(databases: Databases, dialect: str) -> dict[str, float]:
    url = databases.noclash_db(dialect)
    engine = noclash_engine(url, 4)
    try:
        owner = make_owner(engine)
        _user, token = create_user(engine, f"overhead-{time.monotonic_ns()}@example.com")
        server_token = dialect_for(engine).server_generates_uuid4

        def values() -> dict[str, Any]:
            v: dict[str, Any] = {
                "id": uuid7(), "owner_id": owner.user_id, "name": "bench",
                "slack_channel_id": None, "asana_project_id": None, "require_auth": False,
                "created_at": utcnow(),
            }
            if not server_token:
                v["public_token"] = uuid4()
            return v

        bare = sa.insert(chatbots)
        returning = sa.insert(chatbots).returning(*chatbots.c)
        returning_token = sa.insert(chatbots).returning(chatbots.c.public_token)

        def noclash() -> None:
            with engine.begin() as conn:
                create_chatbot(conn, owner_id=owner.user_id, name="bench")

        def prebuilt_returning() -> None:
            with engine.begin() as conn:
                conn.execute(returning, values()).one()

        def prebuilt_returning_token() -> None:
            with engine.begin() as conn:
                conn.execute(returning_token, values()).one()

        def prebuilt_bare() -> None:
            with engine.begin() as conn:
                conn.execute(bare, values())

        def empty_transaction() -> None:
            with engine.begin():
                pass

        async def hops(n: int) -> None:
            for _ in range(n):
                await run_in_threadpool(lambda: None)

        titles = itertools.count()

        def insert_conversation_noclash() -> None:
            with engine.begin() as conn:
                insert_conversation(
                    conn, chatbot_id=owner.chatbot_id, title=f"Weekly sync {next(titles)}"
                )

        claim = _prebuilt_slug_claim()

        def insert_conversation_prebuilt() -> None:
            title = f"Weekly sync {next(titles)}"
            now = utcnow()
            params = {
                "id": uuid7(), "chatbot_id": owner.chatbot_id, "connection_id": None,
                "psid": None, "status": "OPEN", "title": title, "slug": slugify(title),
                "fallback_slug": f"{slugify(title)}-zzzz",
                "created_at": now, "closed_at": None, "last_message_at": None,
            }
            with engine.begin() as conn:
                row = conn.execute(claim, params).first()
            assert row is not None and row.slug_registered

        slug_pieces: dict[str, Callable[[], Any]] = {}
        if dialect_for(engine).supports_dml_in_cte:
            slug_pieces = {
                "insert_conversation, new title (noclash)": insert_conversation_noclash,
                "the same CTE prebuilt, bound parameters (the fix)": (
                    insert_conversation_prebuilt
                ),
            }

        started = time.perf_counter()
        anyio.run(hops, 2000)
        hop = (time.perf_counter() - started) / 2000 * 1e6
        measured = interleaved_us(
            {
                "create_chatbot (noclash)": noclash,
                "prebuilt INSERT ... RETURNING *": prebuilt_returning,
                "prebuilt INSERT ... RETURNING public_token": prebuilt_returning_token,
                "prebuilt INSERT (the limit)": prebuilt_bare,
                "empty transaction (BEGIN, COMMIT)": empty_transaction,
                "build insert().values().returning() (no execution)": lambda: (
                    sa.insert(chatbots).values(values()).returning(*chatbots.c)
                ),
                "build the slug-claim CTE (no execution)": _slug_claim_statement,
                **slug_pieces,
                "authenticate(bearer token)": lambda: authenticate(engine, token),
            },
            PIECE_OPS,
        )
        return {**measured, "one thread-pool hop (sync dependency)": hop}
    finally:
        engine.dispose()
        databases.drop(url)


PIECE_OPS = 800
INBOUND_OPS = 1500
LAST_MESSAGE_INDEX = "ix_conversations_connection_id_status_last_message_at"


def interleaved_us(pieces: dict[str, Callable[[], Any]], ops: int) -> dict[str, float]:
    """Mean microseconds per call of each piece, the pieces taking turns in a shuffled
    order (:func:`bench.harness.run_interleaved` for why): a tenth of the noise of
    best-of runs one after another here, and no piece always follows the same other one."""
    order = list(pieces.items())
    for _name, fn in order:
        for _ in range(50):
            fn()
    total = dict.fromkeys(pieces, 0)
    shuffle = random.Random(len(order)).shuffle
    for _ in range(ops):
        shuffle(order)
        for name, fn in order:
            started = time.perf_counter_ns()
            fn()
            total[name] += time.perf_counter_ns() - started
    return {name: ns / ops / 1000 for name, ns in total.items()}


def measure_inbound(databases: Databases, dialect: str) -> dict[str, float]:
    """The active-conversation scenario's pieces: what a message costs the limit, what the
    upkeep of ``last_message_at`` adds, and each path of ``receive_message``.

    Three copies of the schema: noclash's; the limit's (no triggers, see
    :meth:`bench.databases.Databases.bare_db`); and noclash's without the seed's index on
    ``(connection_id, status, last_message_at)``, which shows what that index costs every
    message: with it, moving ``last_message_at`` rewrites each of the conversation's index
    entries (no HOT update on PostgreSQL). "The same INSERT and its touch" is the limit's
    INSERT plus the forward-only UPDATE of the conversation (one CTE on PostgreSQL,
    migration 0003's trigger on SQLite): the limit plus the one write noclash adds.
    """
    urls = [databases.noclash_db(dialect), databases.bare_db(dialect)]
    urls.append(databases.noclash_db(dialect))
    engine, bare_engine, unindexed = (noclash_engine(url, 2) for url in urls)
    with unindexed.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {LAST_MESSAGE_INDEX}")
    engines = (engine, bare_engine, unindexed)
    try:
        owners = {id(eng): make_owner(eng) for eng in engines}
        ids = itertools.count()
        known = {}
        for eng in engines:
            o = owners[id(eng)]
            receive_message(
                eng, connection_id=o.connection_id, psid="hot", platform_message_id="first",
                text="hello", sent_at=utcnow(),
            )  # fmt: skip
            known[id(eng)] = uuid7()
            with eng.begin() as conn:
                conn.execute(
                    sa.insert(conversations).values(
                        id=known[id(eng)], chatbot_id=o.chatbot_id, connection_id=o.connection_id,
                        psid="known", status="OPEN", slug="known", created_at=utcnow(),
                    )
                )

        def message(eng: Any) -> dict[str, Any]:
            now = utcnow()
            return {
                "id": uuid7(), "conversation_id": known[id(eng)],
                "connection_id": owners[id(eng)].connection_id,
                "platform_message_id": f"m{next(ids)}", "direction": "in", "text": "hello",
                "sent_at": now, "created_at": now,
            }  # fmt: skip

        bare = sa.insert(messages)
        # Parameter names that are no conversations column: SQLAlchemy would add those to
        # the UPDATE's SET clause.
        stored = (
            sa.insert(messages)
            .values({c.name: sa.bindparam(f"m_{c.name}", type_=c.type) for c in messages.c})
            .returning(messages.c.conversation_id)
            .cte("stored")
        )
        last = conversations.c.last_message_at
        at = sa.bindparam("m_sent_at", type_=conversations.c.last_message_at.type)
        with_touch = (
            sa.update(conversations)
            .where(conversations.c.id == stored.c.conversation_id)
            .values(last_message_at=sa.case((sa.or_(last.is_(None), last < at), at), else_=last))
            .add_cte(stored)
        )

        def limit() -> None:
            with bare_engine.begin() as conn:
                conn.execute(bare, message(bare_engine))

        def limit_and_touch() -> None:
            with engine.begin() as conn:
                if sql_for(conn).messages_move_conversations:
                    conn.execute(bare, message(engine))
                else:
                    values = {f"m_{k}": v for k, v in message(engine).items()}
                    conn.execute(with_touch, values)

        def deliver(eng: Engine, psid: str, mid: str | None = None) -> Callable[[], None]:
            def op() -> None:
                receive_message(
                    eng, connection_id=owners[id(eng)].connection_id,
                    psid=psid if psid != "new" else f"c{next(ids)}",
                    platform_message_id=mid or f"m{next(ids)}", text="hello, is anyone there?",
                    sent_at=utcnow(),
                )  # fmt: skip

            return op

        return interleaved_us(
            {
                "message INSERT into a known conversation (the limit)": limit,
                "the same INSERT and its touch of last_message_at": limit_and_touch,
                "receive_message into the active conversation (noclash)": deliver(engine, "hot"),
                "the same, last_message_at not indexed": deliver(unindexed, "hot"),
                "receive_message, a redelivery (noclash)": deliver(engine, "hot", "first"),
                "receive_message, a new customer's first message (noclash)": deliver(
                    engine, "new"
                ),
            },
            INBOUND_OPS,
        )
    finally:
        for eng in engines:
            eng.dispose()
        for url in urls:
            databases.drop(url)


# The trigger a SQLite-only design would need to write a message's event without a
# second statement: the JSON built by SQLite, no Python (not what noclash does; see
# measure_sqlite_event_writes).
_EVENT_TRIGGER = f"""
CREATE TRIGGER probe_message_created AFTER INSERT ON messages BEGIN
  INSERT INTO events (id, chatbot_id, conversation_id, type, subject, payload, created_at)
  VALUES (lower(hex(randomblob(16))), 'c0ffee', NEW.conversation_id, 'message.created',
          NEW.id, json_object({", ".join(f"'{f}', NEW.{f}" for f in MESSAGE_FIELDS)}),
          NEW.created_at)
  ON CONFLICT (type, subject) DO NOTHING;
END"""


def measure_sqlite_event_writes(workdir: Path, ops: int = 8000) -> dict[str, float]:
    """What an event costs SQLite itself, Python's part as small as it gets.

    Bare ``sqlite3``, noclash's ``messages`` and ``events`` tables and indexes (compiled
    from its metadata; foreign keys off, as their parents are not there), noclash's
    pragmas, a ``BEGIN IMMEDIATE`` transaction per message on its own database per piece:
    the message alone; the message and its ``message.created`` as a second statement
    (JSON by ``json.dumps``), which is noclash's way; the message and its event written
    by an ``AFTER INSERT`` trigger (JSON by ``json_object``), the way noclash does not
    take (it binds every writer of ``messages`` to the event format)."""
    ddl = [
        str(statement.compile(dialect=sa.dialects.sqlite.dialect()))
        for table in (messages, events)
        for statement in (
            sa.schema.CreateTable(table),
            *(sa.schema.CreateIndex(index) for index in table.indexes),
        )
    ]
    columns = ", ".join(c.name for c in messages.columns)
    marks = ", ".join("?" * len(messages.columns))
    insert_message = f"INSERT INTO messages ({columns}) VALUES ({marks})"
    insert_event = (
        "INSERT INTO events (id, chatbot_id, conversation_id, type, subject, payload, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (type, subject) DO NOTHING"
    )
    count = itertools.count()

    def database(name: str, trigger: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(workdir / f"events_{name}.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        for statement in ddl + ([_EVENT_TRIGGER] if trigger else []):
            conn.execute(statement)
        return conn

    def piece(conn: sqlite3.Connection, event: bool) -> Callable[[], None]:
        def write() -> None:
            message_id, conversation_id, now = uuid7(), uuid7(), utcnow()
            row = {"id": message_id.hex, "conversation_id": conversation_id.hex,
                   "connection_id": None, "platform_message_id": f"m{next(count)}",
                   "direction": "in", "text": "hello, is my order on its way?",
                   "sent_at": None, "created_at": now.strftime("%Y-%m-%d %H:%M:%S.%f")}  # fmt: skip
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(insert_message, tuple(row[c.name] for c in messages.columns))
            if event:
                data = {**row, "id": str(message_id), "conversation_id": str(conversation_id),
                        "created_at": now.isoformat().replace("+00:00", "Z")}  # fmt: skip
                conn.execute(insert_event, (uuid7().hex, "c0ffee", conversation_id.hex,
                                            "message.created", str(message_id),
                                            json.dumps(data), row["created_at"]))  # fmt: skip
            conn.execute("COMMIT")

        return write

    return interleaved_us(
        {
            "SQLite: a message alone": piece(database("alone", False), False),
            "SQLite: message + event, second statement": piece(database("second", False), True),
            "SQLite: message + event, trigger": piece(database("trigger", True), False),
        },
        ops,
    )


def _table(results: dict[str, dict[str, float]]) -> None:
    names = list(dict.fromkeys(n for d in DIALECTS for n in results[d]))
    print("| piece (one thread, interleaved) | " + " | ".join(f"{d} us" for d in DIALECTS) + " |")
    print("|---|" + "--:|" * len(DIALECTS))
    for name in names:
        cells = [f"{results[d][name]:.0f}" if name in results[d] else "n/a" for d in DIALECTS]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> int:
    with Databases() as databases:
        results = {d: measure(databases, d) for d in DIALECTS}
        inbound = {d: measure_inbound(databases, d) for d in DIALECTS}
    _table(results)
    print()
    _table(inbound)
    print()
    with tempfile.TemporaryDirectory(prefix="noclash-events-") as workdir:
        event_writes = measure_sqlite_event_writes(Path(workdir))
    print("| piece (one thread, interleaved) | sqlite us |")
    print("|---|--:|")
    for name, us in event_writes.items():
        print(f"| {name} | {us:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
