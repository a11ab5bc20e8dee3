"""chatbots.allowed_origins: the web origins whose pages may use a chatbot's widget API.

A JSON list of origins, NULL for any. An addition: SQLite adds the column in place.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chatbots", sa.Column("allowed_origins", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("chatbots") as batch:
        batch.drop_column("allowed_origins")
