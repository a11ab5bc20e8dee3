"""Doctor and repair: find duplicate-key hazards in any SQLite or PostgreSQL database."""
