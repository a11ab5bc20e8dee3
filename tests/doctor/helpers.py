"""Snapshots of a database's data, to prove repairs touch only what they say."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from noclash.config import normalise_database_url
from noclash.doctor.catalog import BACKUP_TABLE


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
