"""Upgrades, start-up and backups as an operator meets them on a production noclash.

Each test runs the real ``noclash`` (in a subprocess) or the real migrations on a real
SQLite file or PostgreSQL database, with rows written the way they get there in practice.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from noclash.db.dialects.base import MigrationCheckFailed
from noclash.db.engine import create_engine
from noclash.db.migrate import current_revision, head_revision, upgrade, upgrade_engine
from noclash.db.types import utcnow
from noclash.unique import uuid7
from tests.support.factories import make_chatbot, make_connection
from tests.support.migrations import insert_owner
from tests.support.serve import serving

NOCLASH = [sys.executable, "-m", "noclash"]


def _run(*args: str, url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = os.environ | {"NOCLASH_DATABASE_URL": url} | (env or {})
    return subprocess.run(
        [*NOCLASH, *args], env=environ, capture_output=True, text=True, timeout=120
    )


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _delete_by_hand(path: str, sql: str) -> list[tuple]:
    """What an operator's ``sqlite3 noclash.db`` session does: the shell opens the file
    with foreign keys off (SQLite's default), so a DELETE cascades into nothing. Returns
    the rows left pointing nowhere afterwards."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql)
        conn.commit()
        return conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()


# -- 1. Rows orphaned by hand never keep a SQLite server from starting ----------------------


def test_serve_starts_on_a_sqlite_database_with_a_chatbot_deleted_by_hand(tmp_path: Path):
    """`serve` migrates a SQLite file to head on every start. The check meant for what a
    migration does ran even when nothing was to run, so one chatbot deleted in the sqlite3
    shell (its connection left behind) made every later start exit 2 with "the migration
    would leave 1 rows whose foreign keys point nowhere": an outage no migration caused."""
    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        spam = make_chatbot(engine, name="spam")
        make_connection(engine, spam.id, channel="telegram")
        make_chatbot(engine, name="kept")
    finally:
        engine.dispose()
    assert _delete_by_hand(_sqlite_path(url), "DELETE FROM chatbots WHERE name = 'spam'")

    made = _run("user", "create", "ops@example.com", url=url)  # migrates to head first
    assert made.returncode == 0, made.stderr
    with serving(url, tmp_path / "logs") as served:
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
        with httpx.Client(base_url=served.base_url, headers=headers, timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            created = client.post("/api/chatbots", json={"name": "after the restart"})
            assert created.status_code == 201, created.text
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = set(conn.scalars(sa.text("SELECT name FROM chatbots")))
        assert names >= {"kept", "after the restart"} and "spam" not in names
    finally:
        engine.dispose()


def test_an_upgrade_over_rows_orphaned_by_hand_is_refused_as_such(tmp_path: Path):
    """With a migration to run, rows that already point nowhere cannot be told from rows
    the migration broke: the upgrade is refused, saying the rows were there before, and
    nothing changes. Once they are deleted, the same upgrade succeeds."""
    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    upgrade(url, "0008")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _user, bot = insert_owner(conn, utcnow())
            conn.execute(sa.text(
                "INSERT INTO connections (id, chatbot_id, channel, external_id, created_at) "
                "VALUES (:id, :bot, 'telegram', '42', :now)"
            ), {"id": uuid7().hex, "bot": bot.hex, "now": utcnow()})  # fmt: skip
    finally:
        engine.dispose()
    assert _delete_by_hand(_sqlite_path(url), "DELETE FROM chatbots")

    refused = _run("db", "upgrade", url=url)
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("nothing was migrated: the database already holds rows"), line
    assert "foreign_key_check" in line
    engine = create_engine(url)
    try:
        assert current_revision(engine) == "0008"
        with pytest.raises(MigrationCheckFailed, match="already holds"):
            upgrade_engine(engine)
        assert current_revision(engine) == "0008"
    finally:
        engine.dispose()

    assert _delete_by_hand(_sqlite_path(url), "DELETE FROM connections") == []
    done = _run("db", "upgrade", url=url)
    assert done.returncode == 0, done.stderr
    assert f"database at revision {head_revision()}" in done.stderr


def _holding_the_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that holds the SQLite file's write lock for ``seconds``, as a
    migration does; returns once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            f"time.sleep({seconds})\n"
            "c.execute('COMMIT')\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


# -- 2. `noclash db upgrade` on SQLite waits for another process's migration ---------------


def test_db_upgrade_on_sqlite_waits_for_a_migration_longer_than_the_busy_timeout(tmp_path: Path):
    """Two `noclash db upgrade` at once: one migrates, the other waits for it and finds
    nothing to do (docs/deployment.md: it "waits without a bound in any case"). On SQLite
    the waiter gave up after NOCLASH_SQLITE_BUSY_TIMEOUT_MS (30 s: less than migration
    0009 takes on a few million events) with "database is locked", exit 2. Here another
    process holds the write lock, as a migration does, for longer than that timeout."""
    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    upgrade(url, "0010")
    holder = _holding_the_write_lock(tmp_path / "noclash.db", 3)
    try:
        waited = _run("db", "upgrade", url=url, env={"NOCLASH_SQLITE_BUSY_TIMEOUT_MS": "500"})
    finally:
        assert holder.wait(timeout=30) == 0
    assert waited.returncode == 0, waited.stderr
    assert f"database at revision {head_revision()}" in waited.stderr


def test_user_create_on_sqlite_waits_for_a_migration_longer_than_the_busy_timeout(
    tmp_path: Path,
):
    """`noclash user create` migrates an embedded database first (so the administrator
    can be made before the first start); beside a migration that holds the write lock
    longer than the busy timeout it waits for it, as `serve` and `db upgrade` do."""
    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    upgrade(url, "0010")
    holder = _holding_the_write_lock(tmp_path / "noclash.db", 3)
    try:
        made = _run("user", "create", "ops@example.com", url=url,
                    env={"NOCLASH_SQLITE_BUSY_TIMEOUT_MS": "500"})  # fmt: skip
    finally:
        assert holder.wait(timeout=30) == 0
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("nc_")


def test_serve_on_sqlite_waits_for_a_migration_longer_than_the_busy_timeout(tmp_path: Path):
    """Two `noclash serve` started at once on a file to migrate: the second waits for the
    first's migration however long it takes (it gave up after the serving engine's busy
    timeout, exit 2 "database is locked"). Here another process holds the write lock, as
    a migration does, for longer than that timeout; serve then migrates and serves."""
    from tests.support.serve import serving

    url = f"sqlite:///{tmp_path / 'noclash.db'}"
    upgrade(url, "0010")
    holder = _holding_the_write_lock(tmp_path / "noclash.db", 3)
    try:
        with serving(url, tmp_path, env={"NOCLASH_SQLITE_BUSY_TIMEOUT_MS": "500"}) as served:
            ready = httpx.get(f"{served.base_url}/readyz", timeout=5)
    finally:
        assert holder.wait(timeout=30) == 0
    assert ready.status_code == 200 and ready.json()["migration"] == head_revision()


# -- 3. A rolling upgrade across 0011 (docs/deployment.md, "Upgrades", step 4) ---------------


def _sequence_as_0010_did(conn: sa.Connection) -> int:
    """The sequencer of the noclash of revision 0010, verbatim (``git show
    8d729fb^:src/noclash/chat/events.py``): numbers from ``max(events.seq)``, knowing
    nothing of ``event_sequence``. A process of that version runs it for as long as it
    serves, after `noclash db upgrade` has migrated the database under it."""
    from noclash.db.tables import events

    base = sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0)).scalar_subquery()
    batch = (
        sa.select(events.c.id, (base + sa.func.row_number().over(order_by=events.c.id))
                  .label("seq"))
        .where(events.c.seq.is_(None)).order_by(events.c.id).limit(1000).subquery()
    )  # fmt: skip
    result = conn.execute(
        sa.update(events).values(seq=batch.c.seq).where(events.c.id == batch.c.id)
    )
    return result.rowcount or 0


def test_events_are_numbered_after_a_rolling_upgrade_across_0011(fresh_url):
    """The documented upgrade: `noclash db upgrade`, then restart the processes one by
    one, "the previous version keeps working against the new schema while the restart
    rolls". A 0010 process still serving numbers events from max(seq) and leaves the new
    counter behind; every new sequencer then gives a number already held, fails on
    uq_events_seq, and no event is numbered again: GET /api/events answers 409 to every
    user, streams and bot webhooks stop, for good."""
    from noclash.chat import events as chat_events
    from noclash.db.tables import events

    engine = create_engine(fresh_url)
    try:
        upgrade_engine(engine, "0010")
        with engine.begin() as conn:
            _user, bot = insert_owner(conn, utcnow())

        def event(subject: str) -> None:
            with engine.begin() as conn:
                conn.execute(events.insert().values(
                    id=uuid7(), chatbot_id=bot, type="message.created", subject=subject,
                    payload={}, created_at=utcnow(),
                ))  # fmt: skip

        for n in range(3):
            event(f"before-{n}")
        with engine.begin() as conn:
            assert _sequence_as_0010_did(conn) == 3
        upgrade_engine(engine)  # the new version's `db upgrade`; old processes serve on
        event("old-process")
        with engine.begin() as conn:
            assert _sequence_as_0010_did(conn) == 1  # seq 4, the counter still at 3
        event("new-process")
        assert chat_events.sequence_all(engine) == 1  # a restarted process
        with engine.connect() as conn:
            seqs = list(conn.scalars(sa.select(events.c.seq).order_by(events.c.id)))
        assert seqs == [1, 2, 3, 4, 5]
    finally:
        engine.dispose()


# -- 4. Another application's database ------------------------------------------------------


def test_another_applications_database_is_refused_in_one_line_with_nothing_created(fresh_url):
    """A mistyped URL that names another application's database, whose tables share
    noclash's names: the first migration stopped on the driver's 'relation "chatbots"
    already exists', which reads as a half-made noclash database whose tables one could
    drop. It says what the database is instead, and creates nothing."""
    engine = create_engine(fresh_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE chatbots (id INTEGER PRIMARY KEY, label TEXT)")
            conn.exec_driver_sql("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
            conn.exec_driver_sql("INSERT INTO messages (id, body) VALUES (1, 'theirs')")
        before = sorted(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()

    for args in (["db", "upgrade"], ["user", "create", "ops@example.com"]):
        result = _run(*args, url=fresh_url)
        if fresh_url.startswith("postgresql") and args[0] == "user":
            continue  # a server database is not migrated by `user create` (exit 2, "run ...")
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "no noclash revision" in lines[0] and "chatbots, messages" in lines[0]
        assert "another application's database" in lines[0] and "Nothing was created" in lines[0]
    engine = create_engine(fresh_url)
    try:
        assert sorted(sa.inspect(engine).get_table_names()) == before
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT body FROM messages").scalar() == "theirs"
    finally:
        engine.dispose()


# -- 5. Every earlier revision, with rows of every kind, upgrades to the head schema ---------


def _populate_any_revision(conn: sa.Connection) -> None:
    """Rows of every table the database has at its revision, in every state (statuses,
    directions, delivery states), written with only the columns that revision has."""
    from datetime import timedelta

    from noclash.db.tables import metadata
    from noclash.unique import uuid4

    inspector = sa.inspect(conn)
    columns = {name: {c["name"] for c in inspector.get_columns(name)}
               for name in inspector.get_table_names()}  # fmt: skip
    sqlite_triggers = conn.dialect.name == "sqlite" and bool(
        conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'trigger'").first()
    )
    now = utcnow()

    def insert(table: str, **values: object) -> None:
        if table in columns:
            kept = {k: v for k, v in values.items() if k in columns[table]}
            conn.execute(metadata.tables[table].insert().values(**kept))

    user, bot = uuid7(), uuid7()
    insert("users", id=user, email="a@x.io", token_hash="h" * 64, is_admin=True,
           created_at=now, token_revoked_at=now)  # fmt: skip
    insert("chatbots", id=bot, owner_id=user, name="b", public_token=uuid4(),
           require_auth=True, created_at=now, webhook_url="https://bot.example/hook",
           webhook_secret="s", allowed_origins=["https://a.example"], webhook_events=3)  # fmt: skip
    n = 0
    for channel in ("messenger", "instagram", "telegram", "widget", None):
        connection = uuid7() if channel else None
        if channel:
            insert("connections", id=connection, chatbot_id=bot, channel=channel,
                   external_id=f"{channel}-1", secret="x", created_at=now,
                   access_token="t")  # fmt: skip
        for status in ("OPEN", "SNOOZED", "CLOSED", "CLOSED"):
            n += 1
            conversation = uuid7()
            insert("conversations", id=conversation, chatbot_id=bot,
                   connection_id=connection, psid=f"{channel}-{status}-{n}", status=status,
                   slug=f"s-{n}", last_message_at=now, created_at=now,
                   snoozed_until=now + timedelta(hours=1) if status == "SNOOZED" else None,
                   closed_at=now if status == "CLOSED" else None)  # fmt: skip
            if not sqlite_triggers:  # 0002's trigger registers it on SQLite
                insert("conversation_slugs", chatbot_id=bot, slug=f"s-{n}",
                       conversation_id=conversation, created_at=now)  # fmt: skip
            for direction in ("out", "in"):
                message, event = uuid7(), uuid7()
                insert("messages", id=message, conversation_id=conversation,
                       connection_id=connection, direction=direction, text="é ✓",
                       platform_message_id=f"m-{message}" if connection else None,
                       sent_at=now, created_at=now)  # fmt: skip
                insert("events", id=event, seq=2 * n if direction == "in" else None,
                       chatbot_id=bot, conversation_id=conversation,
                       type="message.created", subject=str(message), payload={"n": n},
                       created_at=now)  # fmt: skip
                states = ("queued", "sending", "sent", "failed", "unknown")
                if direction == "out" and channel:
                    insert("deliveries", id=uuid7(), message_id=message, destination=channel,
                           conversation_id=conversation, connection_id=connection,
                           recipient="r", status=states[n % 5], attempts=1,
                           next_attempt_at=now, created_at=now, updated_at=now)  # fmt: skip
                insert("deliveries", id=uuid7(), event_id=event, destination="webhook",
                       conversation_id=conversation, status=states[(n + 2) % 5],
                       next_attempt_at=now, created_at=now, updated_at=now)  # fmt: skip
            if channel == "widget":
                insert("sessions", id=uuid7(), session_id=uuid4(), chatbot_id=bot,
                       connection_id=connection, conversation_id=conversation,
                       created_at=now)  # fmt: skip
    for key, status in (("done", 201), ("running", None)):
        insert("idempotency_keys", id=uuid7(), scope=str(user), key=key, method="POST",
               path="/api/chatbots", request_hash="a" * 64, response_status=status,
               response_headers={"x": "y"} if status else None,
               response_body=b"{}" if status else None, created_at=now,
               expires_at=now + timedelta(days=1))  # fmt: skip
    insert("rate_limits", bucket="b", window_start=now, hits=3)


def _schema(engine: sa.Engine) -> dict[str, object]:
    """What a migrated schema is made of, beyond what compare_metadata compares: every
    index with its predicate, every CHECK, and SQLite's triggers."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(
                "SELECT type, name, tbl_name FROM sqlite_master "
                "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
            ).all()
            indexes = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
                "AND sql IS NOT NULL ORDER BY name"
            ).all()
            checks = {t: sorted(c["sqltext"] for c in sa.inspect(conn).get_check_constraints(t))
                      for (kind, t, _tbl) in rows if kind == "table"}  # fmt: skip
        else:
            rows = conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).all()
            indexes = conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
            ).all()
            checks = conn.exec_driver_sql(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE connamespace = 'public'::regnamespace ORDER BY 1"
            ).all()
    normalise = " ".join
    return {"objects": [tuple(r) for r in rows],
            "indexes": [(name, normalise(str(sql).split())) for name, sql in indexes],
            "constraints": checks}  # fmt: skip


def test_every_earlier_revision_with_data_upgrades_to_the_head_schema(
    fresh_url, pg_databases, tmp_path: Path
):
    """An operator's upgrade from any release: populated at revision R, upgraded, every
    row is kept, no foreign key points nowhere, and the schema is the one a fresh
    database at head has (indexes with their predicates, constraints, triggers)."""
    from noclash.db.migrate import _scripts

    head = create_engine(fresh_url)
    try:
        upgrade_engine(head)
        wanted = _schema(head)
    finally:
        head.dispose()
    revisions = [s.revision for s in reversed(list(_scripts().walk_revisions()))][:-1]
    for revision in revisions:
        if fresh_url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / f'at-{revision}.db'}"
        else:
            url = pg_databases.create()
        engine = create_engine(url)
        try:
            upgrade_engine(engine, revision)
            with engine.begin() as conn:
                _populate_any_revision(conn)
            tables = sa.inspect(engine).get_table_names()
            count = "SELECT count(*) FROM {}".format
            with engine.connect() as conn:
                before = {t: conn.exec_driver_sql(count(t)).scalar() for t in tables}
            upgrade_engine(engine)
            with engine.connect() as conn:
                after = {t: conn.exec_driver_sql(count(t)).scalar() for t in tables}
                if engine.dialect.name == "sqlite":
                    assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            before.pop("alembic_version"), after.pop("alembic_version")
            assert after == before, revision
            assert _schema(engine) == wanted, revision
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()
            if not url.startswith("sqlite"):
                pg_databases.drop(url)


# -- 6. A migration killed half-way leaves the database as it was --------------------------


def _events_at_0008(url: str, count: int) -> None:
    """A database at revision 0008 holding ``count`` numbered events (0009 rebuilds the
    table on SQLite and re-creates its indexes on PostgreSQL)."""
    from noclash.db.tables import events

    engine = create_engine(url)
    try:
        upgrade_engine(engine, "0008")
        with engine.begin() as conn:
            _user, bot = insert_owner(conn, utcnow())
            now = utcnow()
            for start in range(0, count, 20_000):
                conn.execute(events.insert(), [
                    {"id": uuid7(), "seq": i + 1, "chatbot_id": bot, "type": "message.created",
                     "subject": f"s{i}", "payload": {"text": "hello"}, "created_at": now}
                    for i in range(start, min(start + 20_000, count))
                ])  # fmt: skip
    finally:
        engine.dispose()


def _after_the_kill_then_again(url: str, count: int) -> None:
    """The killed run changed nothing; the next run migrates everything, every row kept."""
    engine = create_engine(url)
    try:
        assert current_revision(engine) == "0008"
        # 0008's whole-table UNIQUE constraint on seq, which 0009 replaces by an index
        constraints = {u["name"] for u in sa.inspect(engine).get_unique_constraints("events")}
        assert "uq_events_seq" in constraints
    finally:
        engine.dispose()
    again = _run("db", "upgrade", url=url)
    assert again.returncode == 0, again.stderr
    engine = create_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == count
            assert conn.exec_driver_sql("SELECT last_seq FROM event_sequence").scalar() == count
    finally:
        engine.dispose()


def test_sqlite_migration_killed_half_way_is_rolled_back_and_runs_again(tmp_path: Path):
    """kill -9 while 0009 rebuilds ``events`` (its rows already copied into the WAL, not
    committed): every migration of a run is one transaction, so SQLite's recovery drops
    them all and the next `db upgrade` starts from 0008 again."""
    db = tmp_path / "noclash.db"
    url = f"sqlite:///{db}"
    count = 150_000
    _events_at_0008(url, count)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = db.with_name("noclash.db-wal")
    env = os.environ | {"NOCLASH_DATABASE_URL": url}
    migrating = subprocess.Popen([*NOCLASH, "db", "upgrade"], env=env,
                                 stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (wal.exists() and wal.stat().st_size > 4_000_000):
        assert migrating.poll() is None, "the migration ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    migrating.kill()
    migrating.wait(timeout=30)
    _after_the_kill_then_again(url, count)


def test_postgresql_migration_killed_half_way_is_rolled_back_and_runs_again(fresh_pg_url):
    """kill -9 after 0009 re-created the indexes of ``events``, while 0010 waits for a
    lock on ``chatbots`` another session holds: nothing of the run is committed, and the
    next `db upgrade` starts from 0008 again."""
    count = 2_000
    _events_at_0008(fresh_pg_url, count)
    engine = create_engine(fresh_pg_url)

    def sessions(where: str) -> int:
        """Sessions whose query starts the 0010 ALTER (a new transaction each time:
        pg_stat_activity is a snapshot held until the reading transaction ends)."""
        with engine.connect() as watcher:
            return watcher.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                f"WHERE starts_with(query, 'ALTER TABLE chatbots') {where}"
            ).scalar_one()

    holder = engine.connect()
    try:
        holder.begin()
        holder.exec_driver_sql("LOCK TABLE chatbots IN ACCESS EXCLUSIVE MODE")
        env = os.environ | {"NOCLASH_DATABASE_URL": fresh_pg_url}
        migrating = subprocess.Popen([*NOCLASH, "db", "upgrade"], env=env,
                                     stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 60
        while not sessions("AND wait_event_type = 'Lock'"):
            assert migrating.poll() is None, migrating.stderr
            assert time.monotonic() < deadline
            time.sleep(0.05)
        migrating.kill()
        migrating.wait(timeout=30)
    finally:
        holder.rollback()
        holder.close()
    deadline = time.monotonic() + 60
    while sessions(""):  # the server notices that its client is gone, and rolls back
        assert time.monotonic() < deadline
        time.sleep(0.05)
    engine.dispose()
    _after_the_kill_then_again(fresh_pg_url, count)


def test_readyz_keeps_a_running_process_ready_when_a_newer_noclash_migrated(database_url):
    """A rolling upgrade: `db upgrade` of the new version, then restarts one by one. The
    old processes answered /readyz 503 "database at migration X, expected Y" as soon as the
    database moved on, so a load balancer dropped every one of them before any new
    process was up. A revision this process does not know (a newer one) keeps it ready;
    one it knows that is not its head (the database behind it) is still not ready."""
    from tests.support.server import start_live_server

    def set_revision(engine: sa.Engine, revision: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})

    with start_live_server(database_url) as live:
        client = live.client()
        assert client.get("/readyz").json() == {"status": "ready", "migration": head_revision()}
        set_revision(live.engine, "9999_from_a_newer_noclash")
        newer = client.get("/readyz")
        assert newer.status_code == 200, newer.text
        assert newer.json() == {"status": "ready", "migration": "9999_from_a_newer_noclash"}
        set_revision(live.engine, "0010")
        behind = client.get("/readyz")
        assert behind.status_code == 503 and behind.json()["type"].endswith("/not-ready")
        set_revision(live.engine, str(head_revision()))
