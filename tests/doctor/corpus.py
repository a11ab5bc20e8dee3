"""The corpus of real public schemas (tests/doctor/corpus/README.md): how each is built.

Each entry builds its database from the files its project published (migrations applied
in order, or a sample database's schema) plus a few rows, and names the application's
normal writes that must still work after ``repair --apply``.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

CORPUS = Path(__file__).parent / "corpus"


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def run_script(url: str, sql: str) -> None:
    """Run a multi-statement script the way its project's tool would (psql / sqlite3)."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(make_url(url).database)
        try:
            con.executescript(sql)
        finally:
            con.close()
        return
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(sql)


def statements(url: str, sql: str) -> None:
    """Run each statement of ``sql`` on its own (each must succeed), foreign keys on."""
    from noclash.doctor.lint import split

    stmts = [s.sql for s in split(sql)]
    if url.startswith("sqlite"):
        con = sqlite3.connect(make_url(url).database, isolation_level=None)
        try:
            con.execute("PRAGMA foreign_keys = ON")
            for s in stmts:
                con.execute(s)
        finally:
            con.close()
        return
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for s in stmts:
            conn.execute(s)


def _pagila(url: str) -> None:
    schema = (CORPUS / "pagila" / "schema.sql").read_text()
    # pg_dump names the owner; the test server's roles differ.
    schema = re.sub(r"^ALTER .* OWNER TO .*;$", "", schema, flags=re.M)
    run_script(url, schema)
    run_script(url, (CORPUS / "pagila" / "rows.sql").read_text())


# Prisma's bookkeeping table, as `prisma migrate deploy` creates it.
_PRISMA_MIGRATIONS = """
CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);
"""


def _migrations(name: str, *, prisma: bool = False) -> Callable[[str], None]:
    def build(url: str) -> None:
        root = CORPUS / name / "migrations"
        files = sorted(root.glob("*/migration.sql")) or sorted(root.glob("*.sql"))
        if prisma:
            run_script(url, _PRISMA_MIGRATIONS)
        for n, path in enumerate(files):
            sql = path.read_text()
            run_script(url, sql)
            if prisma:
                digest = hashlib.sha256(sql.encode()).hexdigest()
                run_script(
                    url,
                    'INSERT INTO "_prisma_migrations" (id, checksum, finished_at, '
                    "migration_name, applied_steps_count) VALUES "
                    f"('{uuid.UUID(int=n + 1, version=4)}', '{digest}', now(), "
                    f"'{path.parent.name}', 1)",
                )
        run_script(url, (CORPUS / name / "rows.sql").read_text())

    return build


def _chinook(url: str) -> None:
    run_script(url, (CORPUS / "chinook" / "schema.sql").read_text())
    run_script(url, (CORPUS / "chinook" / "rows.sql").read_text())


def _django(url: str) -> None:
    subprocess.run(
        [sys.executable, str(CORPUS / "django" / "build.py"), url],
        check=True,
        capture_output=True,
        timeout=300,
    )


@dataclass(frozen=True)
class Entry:
    name: str
    dialects: tuple[str, ...]
    build: Callable[[str], None]
    keys: tuple[str, ...] = ()
    writes: str = field(default="")

    def writes_sql(self) -> str:
        path = CORPUS / self.name / "writes.sql"
        return path.read_text() if path.is_file() else ""


ENTRIES: dict[str, Entry] = {
    "pagila": Entry("pagila", ("postgresql",), _pagila),
    "peppermint": Entry("peppermint", ("postgresql",), _migrations("peppermint", prisma=True)),
    "shiori": Entry("shiori", ("sqlite",), _migrations("shiori")),
    "chinook": Entry("chinook", ("sqlite",), _chinook),
    "django": Entry("django", ("sqlite", "postgresql"), _django),
}
