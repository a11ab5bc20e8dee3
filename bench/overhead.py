"""``python -m bench.overhead``: where noclash's time goes, one thread, no contention.

The main run says *how much* slower or faster noclash is; this says *why*, by timing the
pieces the profiles (cProfile of each contender's op) pointed at, each alone and as the
best of several repeats so that the shared machine's noise is filtered out:

- the same chatbot row written as noclash writes it (``insert().values(dict)
  .returning(*columns)`` built per call) and as a prebuilt statement with bound
  parameters, with and without RETURNING;
- building (not executing) the one-statement slug claim of
  :mod:`noclash.chat.conversations` on PostgreSQL, a data-modifying CTE;
- the per-request extras of the HTTP route: bearer authentication (its own pool checkout
  and SELECT) and one hop to the thread pool per synchronous dependency.
"""

from __future__ import annotations

import itertools
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from starlette.concurrency import run_in_threadpool

from bench.databases import DIALECTS, Databases, noclash_engine
from bench.scenarios import make_owner
from noclash.chat.chatbots import create_chatbot
from noclash.chat.conversations import insert_conversation
from noclash.chat.inbound import receive_message
from noclash.chat.users import authenticate, create_user
from noclash.db.dialects import dialect_for
from noclash.db.tables import chatbots, conversation_slugs, conversations, messages
from noclash.db.types import utcnow
from noclash.unique import uuid4, uuid7
from noclash.unique.slugs import slugify


def best_us(fn: Callable[[], Any], number: int = 300, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``number`` calls, in microseconds per call."""
    for _ in range(30):
        fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _slug_claim_statement() -> sa.Select[Any]:
    """The statement ``noclash.chat.conversations._insert_pg`` builds for every attempt."""
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
    from noclash.chat.conversations import _claim_statement_cte

    return _claim_statement_cte(pg_insert)


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

        slug_rows: dict[str, float] = {}
        if dialect_for(engine).supports_dml_in_cte:
            slug_rows = {
                "insert_conversation, new title (noclash)": best_us(insert_conversation_noclash),
                "the same CTE prebuilt, bound parameters (the fix)": best_us(
                    insert_conversation_prebuilt
                ),
            }

        started = time.perf_counter()
        anyio.run(hops, 2000)
        hop = (time.perf_counter() - started) / 2000 * 1e6
        return {
            "create_chatbot (noclash)": best_us(noclash),
            "prebuilt INSERT ... RETURNING *": best_us(prebuilt_returning),
            "prebuilt INSERT ... RETURNING public_token": best_us(prebuilt_returning_token),
            "prebuilt INSERT (the limit)": best_us(prebuilt_bare),
            "empty transaction (BEGIN, COMMIT)": best_us(empty_transaction),
            "build insert().values().returning() (no execution)": best_us(
                lambda: sa.insert(chatbots).values(values()).returning(*chatbots.c)
            ),
            "build the slug-claim CTE (no execution)": best_us(_slug_claim_statement),
            **slug_rows,
            "authenticate(bearer token)": best_us(lambda: authenticate(engine, token)),
            "one thread-pool hop (sync dependency)": hop,
        }
    finally:
        engine.dispose()
        databases.drop(url)


def measure_inbound(databases: Databases, dialect: str) -> dict[str, float]:
    """The active-conversation scenario's pieces: what a message costs the limit, what the
    upkeep of ``last_message_at`` adds, and each path of ``receive_message``.

    The limit writes into a copy of the schema without triggers; "and its touch" is the
    same message INSERT plus the forward-only UPDATE of the conversation (in one CTE on
    PostgreSQL, by migration 0003's trigger on SQLite), i.e. the limit plus the one write
    that noclash's schema adds to every message.
    """
    urls = [databases.noclash_db(dialect), databases.bare_db(dialect)]
    engine, bare_engine = (noclash_engine(url, 2) for url in urls)
    try:
        owner, bare_owner = make_owner(engine), make_owner(bare_engine)
        ids = itertools.count()
        first = receive_message(
            engine, connection_id=owner.connection_id, psid="hot",
            platform_message_id="first", text="hello", sent_at=utcnow(),
        )  # fmt: skip
        known = {}
        for eng, o in ((engine, owner), (bare_engine, bare_owner)):
            known[eng] = uuid7()
            with eng.begin() as conn:
                conn.execute(
                    sa.insert(conversations).values(
                        id=known[eng], chatbot_id=o.chatbot_id, connection_id=o.connection_id,
                        psid="known", status="OPEN", slug="known", created_at=utcnow(),
                    )
                )

        def message(eng: Any, o: Any) -> dict[str, Any]:
            now = utcnow()
            return {
                "id": uuid7(), "conversation_id": known[eng], "connection_id": o.connection_id,
                "platform_message_id": f"m{next(ids)}", "direction": "in", "text": "hello",
                "sent_at": now, "created_at": now,
            }

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
                conn.execute(bare, message(bare_engine, bare_owner))

        def limit_and_touch() -> None:
            with engine.begin() as conn:
                if dialect_for(conn).messages_move_conversations:
                    conn.execute(bare, message(engine, owner))
                else:
                    values = {f"m_{k}": v for k, v in message(engine, owner).items()}
                    conn.execute(with_touch, values)

        def deliver(psid: str, mid: str | None = None) -> None:
            receive_message(
                engine, connection_id=owner.connection_id, psid=psid,
                platform_message_id=mid or f"m{next(ids)}", text="hello, is anyone there?",
                sent_at=utcnow(),
            )  # fmt: skip

        assert first.created_conversation
        return {
            "message INSERT into a known conversation (the limit)": best_us(limit),
            "the same INSERT and its touch of last_message_at": best_us(limit_and_touch),
            "receive_message into the active conversation (noclash)": best_us(
                lambda: deliver("hot")
            ),
            "receive_message, a redelivery (noclash)": best_us(lambda: deliver("hot", "first")),
            "receive_message, a new customer's first message (noclash)": best_us(
                lambda: deliver(f"c{next(ids)}")
            ),
        }
    finally:
        for eng in (engine, bare_engine):
            eng.dispose()
        for url in urls:
            databases.drop(url)


def _table(results: dict[str, dict[str, float]]) -> None:
    names = list(dict.fromkeys(n for d in DIALECTS for n in results[d]))
    print("| piece (one thread, best of 5) | " + " | ".join(f"{d} us" for d in DIALECTS) + " |")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
