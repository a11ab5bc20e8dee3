"""Where a repair copies the rows it is about to change, before changing them.

Default: the table ``noclash_repair_backup`` in the same database, written in the repair's
own transaction, so the backup exists exactly when the change does. With ``--backup-dir``:
one JSONL file per run, flushed before the change is committed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from noclash.doctor.catalog import BACKUP_TABLE
from noclash.doctor.connect import first_line
from noclash.doctor.errors import RepairFailed


def _jsonable(value: Any) -> Any:
    """``value`` as the backup stores it. A json/jsonb document or an array (a dict or a
    list from the driver) is its JSON text: ``str()`` wrote Python's spelling
    (``{'a': True}``), which no JSON reader, and no ``::jsonb`` cast, accepts."""
    if value is None or isinstance(value, int | float | str | bool):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict | list):
        # Elements the JSON encoder does not know (uuid[], date[]) as below.
        return json.dumps(value, default=_jsonable)
    return str(value)


@dataclass
class Backup:
    run_id: str
    directory: Path | None = None
    saved: int = field(default=0)

    def save(self, conn: Connection, action: str, table: str, rows: list[dict[str, Any]]) -> None:
        """Copy ``rows`` (column -> value) before ``action`` changes them."""
        if not rows:
            return
        now = datetime.now(UTC).isoformat()
        records = [
            {
                "action": action,
                "created_at": now,
                "row": {k: _jsonable(v) for k, v in row.items()},
                "run_id": self.run_id,
                "table": table,
            }
            for row in rows
        ]
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"noclash-repair-{self.run_id}.jsonl"
            with path.open("a", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(json.dumps(rec, sort_keys=True) + "\n")
        else:
            self._save_in_table(conn, action, table, records, now)
        self.saved += len(rows)

    def _save_in_table(
        self,
        conn: Connection,
        action: str,
        table: str,
        records: list[dict[str, Any]],
        now: str,
    ) -> None:
        """Insert ``records`` into the backup table, creating it first if it is missing.

        A role that may change a table need not be allowed to create one in the current
        schema (PostgreSQL 15+ grants no CREATE on ``public``): the failure read
        "permission denied for schema public", naming neither the backup nor the way
        around it. ``CREATE TABLE IF NOT EXISTS`` needs that privilege even when the table
        exists, so it runs only when the table is missing (one made by an administrator,
        with INSERT granted, is enough).
        """
        try:
            if not sa.inspect(conn).has_table(BACKUP_TABLE):
                conn.exec_driver_sql(
                    f"CREATE TABLE IF NOT EXISTS {BACKUP_TABLE} (run_id VARCHAR(40) NOT NULL, "
                    "action VARCHAR(40) NOT NULL, table_name VARCHAR(200) NOT NULL, "
                    "row_data TEXT NOT NULL, created_at VARCHAR(40) NOT NULL)"
                )
            conn.execute(
                sa.text(
                    f"INSERT INTO {BACKUP_TABLE} (run_id, action, table_name, row_data, "
                    "created_at) VALUES (:r, :a, :t, :d, :c)"
                ),
                [
                    {
                        "r": self.run_id,
                        "a": action,
                        "t": table,
                        "c": now,
                        "d": json.dumps(rec["row"], sort_keys=True),
                    }
                    for rec in records
                ],
            )
        except sa.exc.DBAPIError as exc:
            raise RepairFailed(
                f"{action} on {table} failed and was rolled back: cannot write its backup "
                f"to the table {BACKUP_TABLE} ({first_line(exc)}); back up to JSONL files "
                f"with --backup-dir DIR instead, or let the role create that table",
                action=action,
                table=table,
            ) from exc
