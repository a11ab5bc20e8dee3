"""translate and insert_or_get against real violations, on a schema of their own.

The primitives are a library: these tests declare an unrelated schema (plain, composite
and partial unique keys) to prove nothing depends on noclash's tables.
"""

from __future__ import annotations

import sqlite3
import threading
import time as clock
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from noclash.db.engine import create_engine
from noclash.unique import (
    ClaimNotSettled,
    UniqueViolation,
    insert_or_get,
    translate,
    translating,
    uuid7,
)
from noclash.unique.ids import uuid7_floor

md = sa.MetaData()
_LIVE = sa.text("state = 'live'")
things = sa.Table(
    "things",
    md,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("code", sa.String(50), nullable=False),
    sa.Column("owner", sa.String(50), nullable=False),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("email", sa.String(50)),
    sa.UniqueConstraint("code", name="uq_things_code"),
    sa.UniqueConstraint("owner", "name", name="uq_things_owner_name"),
    sa.Index(
        "uq_things_live_email",
        "email",
        unique=True,
        postgresql_where=_LIVE,
        sqlite_where=_LIVE,
    ),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def lib_engine(request, fresh_sqlite_url, pg_databases):
    if request.param == "sqlite":
        url, drop = fresh_sqlite_url, None
    else:
        url = pg_databases.create()
        drop = url
    engine = create_engine(url)
    md.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        if drop:
            pg_databases.drop(drop)


def _row(**overrides):
    values = {
        "id": uuid7(),
        "code": "c1",
        "owner": "o1",
        "name": "n1",
        "state": "live",
        "email": None,
    }
    return values | overrides


def _violation(engine, first, second) -> UniqueViolation:
    with engine.begin() as conn:
        conn.execute(things.insert().values(first))
    with pytest.raises(IntegrityError) as info, engine.begin() as conn:
        conn.execute(things.insert().values(second))
    violation = translate(info.value, md)
    assert violation is not None
    return violation


def test_translate_plain_unique(lib_engine):
    v = _violation(lib_engine, _row(), _row(id=uuid7(), owner="o2"))
    assert (v.table, v.columns, v.constraint) == ("things", ("code",), "uq_things_code")


def test_translate_composite_unique(lib_engine):
    v = _violation(lib_engine, _row(), _row(id=uuid7(), code="c2"))
    assert (v.table, v.columns, v.constraint) == (
        "things",
        ("owner", "name"),
        "uq_things_owner_name",
    )


def test_translate_partial_unique_index(lib_engine):
    v = _violation(
        lib_engine,
        _row(email="a@x"),
        _row(id=uuid7(), code="c2", name="n2", email="a@x"),
    )
    assert (v.table, v.columns, v.constraint) == ("things", ("email",), "uq_things_live_email")


def test_translate_primary_key(lib_engine):
    ident = uuid7()
    v = _violation(lib_engine, _row(id=ident), _row(id=ident, code="c2", name="n2"))
    assert v.table == "things" and v.columns == ("id",)


def test_partial_index_allows_rows_outside_its_predicate(lib_engine):
    with lib_engine.begin() as conn:
        conn.execute(things.insert().values(_row(email="a@x", state="gone")))
        conn.execute(things.insert().values(_row(id=uuid7(), code="c2", name="n2", email="a@x")))


def test_translate_ignores_other_errors(lib_engine):
    with pytest.raises(IntegrityError) as info, lib_engine.begin() as conn:
        conn.execute(things.insert().values(_row(code=None)))
    assert translate(info.value, md) is None


def test_translating_raises_typed_error_chained(lib_engine):
    with lib_engine.begin() as conn:
        conn.execute(things.insert().values(_row()))
    with pytest.raises(UniqueViolation) as info, lib_engine.begin() as conn, translating(md):
        conn.execute(things.insert().values(_row(id=uuid7(), owner="o2")))
    assert isinstance(info.value.__cause__, IntegrityError)
    assert isinstance(info.value.__cause__.orig, psycopg.errors.UniqueViolation | sqlite3.Error)


def test_insert_or_get_creates_then_gets(lib_engine):
    with lib_engine.begin() as conn:
        row, created = insert_or_get(conn, things, _row(), key="uq_things_code")
    with lib_engine.begin() as conn:
        again, created_again = insert_or_get(
            conn, things, _row(id=uuid7(), owner="o9", name="n9"), key="uq_things_code"
        )
    assert created and not created_again and again.id == row.id and again.owner == "o1"


def test_insert_or_get_on_a_partial_index(lib_engine):
    with lib_engine.begin() as conn:
        old, _ = insert_or_get(conn, things, _row(email="a@x"), key="uq_things_live_email")
        conn.execute(things.update().where(things.c.id == old.id).values(state="gone"))
        new, created = insert_or_get(
            conn,
            things,
            _row(id=uuid7(), code="c2", name="n2", email="a@x"),
            key="uq_things_live_email",
        )
        same, created_same = insert_or_get(
            conn,
            things,
            _row(id=uuid7(), code="c3", name="n3", email="a@x"),
            key="uq_things_live_email",
        )
    assert created and new.id != old.id
    assert not created_same and same.id == new.id


def test_insert_or_get_reraises_a_different_constraint(lib_engine):
    """Targeting `code`, a clash on (owner, name) must raise, not loop or return a row."""
    with lib_engine.begin() as conn:
        conn.execute(things.insert().values(_row()))
    with pytest.raises(UniqueViolation) as info, lib_engine.begin() as conn:
        insert_or_get(conn, things, _row(id=uuid7(), code="other"), key="uq_things_code")
    assert info.value.constraint == "uq_things_owner_name"
    assert info.value.columns == ("owner", "name")


def test_insert_or_get_requires_the_key_columns(lib_engine):
    values = _row()
    del values["code"]
    with pytest.raises(ValueError), lib_engine.begin() as conn:
        insert_or_get(conn, things, values, key="uq_things_code")


def test_insert_or_get_gives_up_when_the_winner_keeps_vanishing(lib_engine):
    """The winner is put back before every INSERT and removed right after it, so each
    attempt conflicts and then reads nothing: the loop must end with ClaimNotSettled."""
    winner = {"id": uuid7().hex, "code": "c1"}

    def put_back(conn, cursor, statement, params, context, executemany):
        if statement.startswith("INSERT INTO things"):
            cursor.connection.cursor().execute(
                f"INSERT INTO things (id, code, owner, name, state) "
                f"VALUES ('{winner['id']}', 'c1', 'w', 'w', 'live')"
            )

    def remove(conn, cursor, statement, params, context, executemany):
        if statement.startswith("INSERT INTO things"):
            cursor.connection.cursor().execute("DELETE FROM things WHERE code = 'c1'")

    with lib_engine.begin() as conn:
        sa.event.listen(conn, "before_cursor_execute", put_back)
        sa.event.listen(conn, "after_cursor_execute", remove)
        with pytest.raises(ClaimNotSettled):
            insert_or_get(conn, things, _row(owner="x"), key="uq_things_code", attempts=3)


def test_insert_or_get_under_concurrency(lib_engine):
    writers = 24
    barrier = threading.Barrier(writers)

    def claim(i: int):
        barrier.wait()
        with lib_engine.begin() as conn:
            return insert_or_get(
                conn, things, _row(id=uuid7(), name=f"n{i}"), key="uq_things_code"
            )

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(claim, range(writers)))
    assert sum(created for _, created in results) == 1
    assert len({row.id for row, _ in results}) == 1
    with lib_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(things)).scalar() == 1


def test_uuid7_stays_on_the_clock_and_in_order_however_many_are_made():
    """The uuid6 package's uuid7 added a millisecond per id made within one: 66,000 ids
    put a process 66 s ahead of the clock, so its ids sorted after those other processes
    made later, and the retention rule ("made before t", read from the id) kept events
    made seconds ago (a pruning test failed after a test had made 66,000 chatbots). Ids
    are ordered within a millisecond by a counter instead (RFC 9562, method 1)."""
    start = datetime.now(UTC)
    made = [uuid7() for _ in range(100_000)]
    end_ms = clock.time_ns() // 1_000_000
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in made[:100])
    assert made[0] >= uuid7_floor(start)
    assert (made[-1].int >> 80) <= end_ms  # not one millisecond ahead of the clock

    per_thread: list[list[uuid.UUID]] = [[] for _ in range(8)]

    def make(out: list[uuid.UUID]) -> None:
        out.extend(uuid7() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [u for out in per_thread for u in out]
    assert len(set(every)) == len(every)
    assert all(out == sorted(out) for out in per_thread)
