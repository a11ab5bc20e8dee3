"""noclash.unique adopted by another application: its own tables, its own plain engine.

Everything here uses ``sqlalchemy.create_engine`` as an application would (not noclash's
engine, with its BEGIN IMMEDIATE and WAL), on its own metadata with the keys real schemas
have: composite, partial, case-insensitive expression indexes, keys left unnamed, tables in
PostgreSQL schemas, ``Text`` columns and ``DateTime(timezone=True)``.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from noclash.db.types import utcnow
from noclash.unique import (
    UniqueError,
    UniqueViolation,
    find_key,
    idempotency,
    insert_or_get,
    translate,
    translating,
    uuid7,
)
from noclash.unique.slugs import slug_candidates, slugify

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _psycopg(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(False)


@pytest.fixture(params=["sqlite", "postgresql"])
def app_url(request: pytest.FixtureRequest) -> str:
    """An empty database of the application's, as a URL for a plain create_engine."""
    if request.param == "sqlite":
        return request.getfixturevalue("fresh_sqlite_url")
    return _psycopg(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def app_engine(app_url: str) -> Iterator[Engine]:
    engine = sa.create_engine(app_url, pool_size=32, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


# -- the application's schema ---------------------------------------------------------------

md = sa.MetaData()
_LIVE = sa.text("deleted_at IS NULL")
posts = sa.Table(
    "posts",
    md,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("org", sa.String(50), nullable=False),
    sa.Column("slug", sa.String(100), nullable=False),
    sa.Column("email", sa.String(100), unique=True),  # unnamed: the database names it
    sa.Column("deleted_at", sa.DateTime),
    # One live post per slug and org, whatever its case.
    sa.Index(
        "uq_posts_live_slug",
        "org",
        sa.func.lower(sa.column("slug")),
        unique=True,
        postgresql_where=_LIVE,
        sqlite_where=_LIVE,
    ),
    sa.Index("uq_posts_text", sa.text("(lower(org) || '/' || slug)"), unique=True),
)


def _post(**values: Any) -> dict[str, Any]:
    return {"id": uuid7(), "org": "acme", "slug": "Hello"} | values


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one()


# -- expression indexes ---------------------------------------------------------------------


def test_claim_on_a_case_insensitive_partial_composite_index(app_engine: Engine) -> None:
    """The conflict target and the winner's read are the index's expressions: before, the
    INSERT said ``ON CONFLICT (org, slug)``, which matches no index (an error on both
    databases), and a read by ``slug = 'HELLO'`` would miss the row ``'Hello'``."""
    md.create_all(app_engine)
    with app_engine.begin() as conn:
        first, created = insert_or_get(conn, posts, _post(), key="uq_posts_live_slug")
        same, created_again = insert_or_get(
            conn, posts, _post(slug="HELLO"), key="uq_posts_live_slug"
        )
        other_org, created_other = insert_or_get(
            conn, posts, _post(org="beta", slug="hello"), key="uq_posts_live_slug"
        )
    assert created and not created_again and same.id == first.id and same.slug == "Hello"
    assert created_other and other_org.id != first.id
    with app_engine.begin() as conn:
        conn.execute(posts.update().where(posts.c.id == first.id).values(deleted_at=sa.func.now()))
        # The deleted post no longer holds the key (partial index): a new one is created.
        fresh, created_fresh = insert_or_get(
            conn, posts, _post(slug="hello"), key="uq_posts_live_slug"
        )
    assert created_fresh and fresh.id != first.id
    assert _count(app_engine) == 3


def test_claim_refuses_an_index_on_text(app_engine: Engine) -> None:
    """An index on ``sa.text()`` names no column: there is nothing to read a winner by, so
    it is refused before any SQL runs instead of an ON CONFLICT that absorbs every key."""
    md.create_all(app_engine)
    with pytest.raises(ValueError, match="names no column"), app_engine.begin() as conn:
        insert_or_get(conn, posts, _post(), key="uq_posts_text")


def test_translate_names_the_columns_of_an_expression_index(app_engine: Engine) -> None:
    md.create_all(app_engine)
    with app_engine.begin() as conn:
        conn.execute(posts.insert().values(_post()))
    with pytest.raises(UniqueViolation) as info, app_engine.begin() as conn, translating(md):
        conn.execute(posts.insert().values(_post(slug="hello")))
    violation = info.value
    assert (violation.table, violation.columns, violation.constraint) == (
        "posts",
        ("org", "slug"),
        "uq_posts_live_slug",
    )


# -- keys the application left unnamed ------------------------------------------------------


def test_an_unnamed_constraint_object_is_found_by_identity() -> None:
    """Unnamed keys all have the name None: matching a UniqueConstraint by name picked the
    first unnamed key of the table, which (table.constraints being a set) was often the
    primary key, so the claim targeted ``id`` instead of ``code``."""
    for i in range(40):
        code = sa.UniqueConstraint("code")
        table = sa.Table(
            f"t{i}",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("code", sa.String(10)),
            code,
        )
        assert find_key(table, code).columns == ("code",)
        assert find_key(table, table.primary_key).columns == ("id",)


def test_claim_on_an_unnamed_column_key(app_engine: Engine) -> None:
    """``Column("email", unique=True)``, the most common declaration, has no name to give
    as ``key``: its column names it."""
    md.create_all(app_engine)
    with app_engine.begin() as conn:
        row, created = insert_or_get(conn, posts, _post(email="a@x.org"), key="email")
        again, created_again = insert_or_get(
            conn, posts, _post(slug="other", email="a@x.org"), key=("email",)
        )
    assert created and not created_again and again.id == row.id
    with pytest.raises(LookupError):
        find_key(posts, "nothing")


# -- schemas --------------------------------------------------------------------------------


def test_translate_looks_in_the_table_the_server_names(fresh_pg_url: str) -> None:
    """Schemas may each hold a key called ``uq_email``: the one on the table PostgreSQL
    names, on the columns it reports, decides (it was the first of that name in the
    metadata, on another table or on a table of the same name in another schema)."""
    engine = sa.create_engine(_psycopg(fresh_pg_url))
    schemas = sa.MetaData()
    sa.Table(
        "billing_contacts",
        schemas,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("Invoice Email", sa.String(50)),
        sa.UniqueConstraint("Invoice Email", name="uq_email"),
        schema="billing",
    )
    sa.Table(
        "Users",
        schemas,
        sa.Column("ID", sa.Integer, primary_key=True),
        sa.Column("Alias", sa.String(50)),
        sa.UniqueConstraint("Alias", name="uq_email"),
        schema="archive",
    )
    users = sa.Table(
        "Users",
        schemas,
        sa.Column("ID", sa.Integer, primary_key=True),
        sa.Column("Email", sa.String(50)),
        sa.UniqueConstraint("Email", name="uq_email"),
        schema="app",
    )
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA app; CREATE SCHEMA billing; CREATE SCHEMA archive")
        schemas.create_all(engine)
        with engine.begin() as conn:
            conn.execute(users.insert().values(ID=1, Email="a@x"))
        with pytest.raises(UniqueViolation) as info, engine.begin() as conn, translating(schemas):
            conn.execute(users.insert().values(ID=2, Email="a@x"))
        violation = info.value
        assert (violation.table, violation.columns, violation.constraint) == (
            "Users",
            ("Email",),
            "uq_email",
        )
        # The same table through insert_or_get, by its mixed-case column.
        with engine.begin() as conn:
            row, created = insert_or_get(conn, users, {"ID": 3, "Email": "a@x"}, key="uq_email")
        assert not created and row.ID == 1
    finally:
        engine.dispose()


# -- inside the caller's transaction, sessions, async ---------------------------------------


def test_the_callers_transaction_survives(app_engine: Engine) -> None:
    """A conflict on the targeted key is no error, so the caller's transaction goes on; a
    violation of another key, caught around a SAVEPOINT (docs/primitives.md), leaves it
    usable on PostgreSQL too, and everything else the transaction wrote commits."""
    md.create_all(app_engine)
    with app_engine.begin() as conn:
        conn.execute(posts.insert().values(_post(slug="before", email="b@x")))
        _, created = insert_or_get(conn, posts, _post(slug="BEFORE"), key="uq_posts_live_slug")
        assert not created
        with pytest.raises(UniqueViolation) as info, conn.begin_nested():
            insert_or_get(conn, posts, _post(slug="new", email="b@x"), key="uq_posts_live_slug")
        assert info.value.columns == ("email",)
        conn.execute(posts.insert().values(_post(slug="after")))
        # A slug claim whose plain candidate is taken moves on to a suffixed one.
        for slug in slug_candidates(slugify("After!")):
            row, created = insert_or_get(conn, posts, _post(slug=slug), key="uq_posts_live_slug")
            if created:
                break
        assert re.fullmatch(r"after-[a-z0-9]{4}", row.slug)
        conn.execute(posts.insert().values(_post(slug="last")))
    with app_engine.connect() as conn:
        slugs = set(conn.execute(sa.select(posts.c.slug)).scalars())
    assert slugs == {"before", "after", row.slug, "last"}


def test_translate_a_schema_table_on_sqlite(fresh_sqlite_url: str) -> None:
    """Metadata written for PostgreSQL schemas, run on SQLite through
    ``schema_translate_map``: SQLite says ``things.code``, the metadata knows
    ``app.things``; the declared key is still found, with its name."""
    schema_md = sa.MetaData()
    things = sa.Table(
        "things",
        schema_md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(10)),
        sa.UniqueConstraint("code", name="uq_things_code"),
        schema="app",
    )
    engine = sa.create_engine(fresh_sqlite_url).execution_options(
        schema_translate_map={"app": None}
    )
    try:
        schema_md.create_all(engine)
        with engine.begin() as conn:
            conn.execute(things.insert().values(id=1, code="a"))
        with (
            pytest.raises(UniqueViolation) as info,
            engine.begin() as conn,
            translating(schema_md),
        ):
            conn.execute(things.insert().values(id=2, code="a"))
        assert (info.value.table, info.value.columns, info.value.constraint) == (
            "things",
            ("code",),
            "uq_things_code",
        )
    finally:
        engine.dispose()


def test_an_orm_session_and_an_async_connection(app_url: str) -> None:
    engine = sa.create_engine(app_url)
    md.create_all(engine)
    try:
        with Session(engine) as session:
            row, created = insert_or_get(
                session.connection(), posts, _post(), key="uq_posts_live_slug"
            )
            session.commit()
        assert created
    finally:
        engine.dispose()
    if engine.dialect.name != "postgresql":
        return  # aiosqlite is not a dependency: the async path is psycopg's

    async def claim_async() -> tuple[Any, bool]:
        async_engine = create_async_engine(app_url.replace("+psycopg", "+psycopg_async"))
        try:
            async with async_engine.begin() as conn:
                found = await conn.run_sync(
                    lambda sync: insert_or_get(sync, posts, _post(), key="uq_posts_live_slug")
                )
                with pytest.raises(UniqueViolation):
                    await conn.run_sync(_insert_translated)
                return found
        finally:
            await async_engine.dispose()

    again, created_again = asyncio.run(claim_async())
    assert not created_again and again.id == row.id


def _insert_translated(conn: sa.Connection) -> None:
    with translating(md):
        conn.execute(posts.insert().values(_post(slug="HELLO")))


def test_many_threads_claim_one_row(app_engine: Engine) -> None:
    """24 threads claim one key of the application's own table on a plain engine: one row,
    every caller gets it, nobody gets an exception."""
    md.create_all(app_engine)
    writers = 24
    barrier = threading.Barrier(writers)

    def claim(i: int) -> tuple[Any, bool]:
        barrier.wait()
        with app_engine.begin() as conn:
            row, created = insert_or_get(
                conn, posts, _post(slug="HELLO" if i % 2 else "hello"), key="uq_posts_live_slug"
            )
            return row.id, created

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(claim, range(writers)))
    assert sum(created for _, created in results) == 1
    assert len({ident for ident, _ in results}) == 1
    assert _count(app_engine) == 1


# -- the exceptions -------------------------------------------------------------------------


def test_a_violation_crosses_processes(app_engine: Engine) -> None:
    """Pickle rebuilds an exception as ``cls(*args)``; UniqueViolation's keyword-only fields
    refused that, so one raised in a worker process could not reach the caller."""
    md.create_all(app_engine)
    with app_engine.begin() as conn:
        conn.execute(posts.insert().values(_post()))
    with pytest.raises(sa.exc.IntegrityError) as info, app_engine.begin() as conn:
        conn.execute(posts.insert().values(_post(slug="HELLO")))
    violation = translate(info.value, md)
    assert violation is not None
    copy = pickle.loads(pickle.dumps(violation))
    assert isinstance(copy, UniqueError)
    assert (copy.table, copy.columns, copy.constraint, str(copy)) == (
        violation.table,
        violation.columns,
        violation.constraint,
        str(violation),
    )


def test_one_base_class_catches_what_the_package_raises_about_data() -> None:
    """``UniqueError`` is documented as the root: a client's malformed idempotency key was
    a bare ValueError, out of reach of ``except UniqueError``."""
    with pytest.raises(UniqueError):
        idempotency.check_key("")
    with pytest.raises(ValueError):
        idempotency.check_key("\n")


# -- idempotency on the application's own table ---------------------------------------------

keys_md = sa.MetaData()
request_keys = sa.Table(
    "request_keys",
    keys_md,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("response_status", sa.Integer),
    sa.Column("response_headers", sa.JSON),
    sa.Column("response_body", sa.LargeBinary),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("scope", "key"),
)
ANSWER = idempotency.StoredResponse(201, [("content-type", "text/plain")], b"ok")


def _claim(engine: Engine, body: bytes = b"{}", **kwargs: Any) -> idempotency.Outcome:
    with engine.begin() as conn:
        outcome = idempotency.claim(
            conn,
            request_keys,
            scope="customer:42",
            key="order-7",
            method="POST",
            path="/orders",
            request_hash=idempotency.request_hash("POST", "/orders", body),
            ttl=timedelta(hours=1),
            **kwargs,
        )
        if isinstance(outcome, idempotency.Claimed):
            idempotency.complete(conn, request_keys, outcome.claim_id, ANSWER)
        return outcome


def test_idempotency_on_a_table_with_text_and_plain_timestamps(app_engine: Engine) -> None:
    """``Text`` columns have no length (the length check raised a TypeError before any SQL),
    and SQLite hands ``DateTime(timezone=True)`` back naive (every retry of a stored key
    raised "can't compare offset-naive and offset-aware datetimes")."""
    keys_md.create_all(app_engine)
    assert isinstance(_claim(app_engine), idempotency.Claimed)
    assert _claim(app_engine) == idempotency.Replay(ANSWER)
    assert isinstance(_claim(app_engine, b'{"other": 1}'), idempotency.Mismatch)
    with app_engine.connect() as conn:
        hash_ = idempotency.request_hash("POST", "/orders", b"{}")
        assert idempotency.peek(
            conn, request_keys, scope="customer:42", key="order-7", request_hash=hash_
        ) == idempotency.Replay(ANSWER)
    # Two hours on, the key has expired: the request runs anew, and purge finds nothing old.
    later = utcnow() + timedelta(hours=2)
    assert isinstance(_claim(app_engine, now=later), idempotency.Claimed)
    with app_engine.begin() as conn:
        assert idempotency.purge_expired(conn, request_keys, now=later) == 0
        assert idempotency.purge_expired(conn, request_keys, now=later + timedelta(hours=2)) == 1


# -- the documentation's examples -----------------------------------------------------------


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


@pytest.mark.parametrize("page", ["primitives.md", "idempotency.md"])
def test_the_docs_examples_run(app_engine: Engine, page: str) -> None:
    """Every Python block of the page, in order, against the application's own engine."""
    blocks = _python_blocks((DOCS / page).read_text())
    assert blocks
    namespace: dict[str, Any] = {"engine": app_engine, "__name__": "docs_example"}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), namespace)
