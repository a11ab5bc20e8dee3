"""Database layer: engine, table definitions, migrations and per-dialect behaviour."""
