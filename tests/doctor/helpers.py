"""Snapshots of a database's data, to prove repairs touch only what they say."""

from __future__ import annotations

import contextlib
import hashlib

import sqlalchemy as sa

from noclash.config import normalise_database_url
from noclash.doctor import diagnose, repair
from noclash.doctor.catalog import BACKUP_TABLE
from noclash.doctor.model import Finding


def snapshot(url: str) -> dict[str, dict[str, object]]:
    """Per table: the row count and a checksum of every column (order-independent)."""
    engine = sa.create_engine(normalise_database_url(url))
    out: dict[str, dict[str, object]] = {}
    try:
        inspector = sa.inspect(engine)
        with engine.connect() as conn:
            for table in inspector.get_table_names():
                if table == BACKUP_TABLE:
                    continue
                cols = [c["name"] for c in inspector.get_columns(table)]
                q = conn.dialect.identifier_preparer.quote
                rows = conn.exec_driver_sql(
                    f"SELECT {', '.join(q(c) for c in cols)} FROM {q(table)}"
                ).all()
                entry: dict[str, object] = {"__rows__": len(rows)}
                for i, c in enumerate(cols):
                    digest = hashlib.sha256()
                    for v in sorted(repr(r[i]) for r in rows):
                        digest.update(v.encode())
                    entry[c] = digest.hexdigest()
                out[table] = entry
    finally:
        engine.dispose()
    return out


def run_sql(url: str, *statements: str, autocommit: bool = False) -> None:
    """Run ``statements`` on ``url`` in one transaction, or each alone in autocommit (where
    a failed concurrent index build is the point, its error is swallowed)."""
    engine = sa.create_engine(normalise_database_url(url))
    try:
        if autocommit:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for s in statements:
                    # The failed concurrent build is the point.
                    with contextlib.suppress(sa.exc.DBAPIError):
                        conn.exec_driver_sql(s)
        else:
            with engine.begin() as conn:
                for s in statements:
                    conn.exec_driver_sql(s)
    finally:
        engine.dispose()


def assert_tokens_left_to_a_person(url: str, says: str) -> Finding:
    """The weak-token finding of ``url`` names no repair and says why (``says``), and
    ``repair --apply`` plans nothing and changes no row; the finding, for its fix SQL."""
    before = snapshot(url)
    [weak] = [f for f in diagnose(url).findings if f.check == "weak-tokens"]
    assert weak.fix.repair is None
    assert says in weak.message
    assert repair(url, apply=True).actions == []
    assert snapshot(url) == before
    return weak
