"""noclash.db.prepared: a statement compiled once per dialect, and no longer than it.

On the suite's real databases: what a prepared statement returns is what SQLAlchemy's
own execution returns, and an engine that is gone takes its compiled statements with it
(a process that makes engines over and over, as the tests and the benchmark do, keeps
none of theirs).
"""

from __future__ import annotations

import gc
import weakref

import sqlalchemy as sa

from noclash.chat.users import create_user
from noclash.db.engine import create_engine
from noclash.db.prepared import Prepared
from noclash.db.tables import users

BY_EMAIL = Prepared(
    sa.select(users.c.id, users.c.email, users.c.created_at).where(
        users.c.email == sa.bindparam("email", type_=users.c.email.type)
    )
)


def test_a_prepared_statement_answers_as_sqlalchemy_does(database_url):
    engine = create_engine(database_url)
    try:
        for n in range(3):
            create_user(engine, f"agent{n}@example.com")
        with engine.connect() as conn:
            query = sa.select(users.c.id, users.c.email, users.c.created_at)
            expected = [tuple(r) for r in conn.execute(query.order_by(users.c.id))]
            got = [
                row
                for email in [r[1] for r in expected] + ["nobody@example.com"]
                for row in BY_EMAIL.on(conn).execute(conn, {"email": email})
            ]
        assert len(got) == 3 and got == expected
    finally:
        engine.dispose()


def test_an_engine_gone_takes_its_compiled_statements_with_it(database_url):
    dialects = []
    for _ in range(3):
        engine = create_engine(database_url)
        with engine.connect() as conn:
            BY_EMAIL.on(conn).execute(conn, {"email": "x@example.com"})
            assert BY_EMAIL.on(conn) is BY_EMAIL.on(conn)  # compiled once per dialect
        dialects.append(weakref.ref(engine.dialect))
        engine.dispose()
        del engine, conn
    gc.collect()
    assert [d() for d in dialects] == [None, None, None]
