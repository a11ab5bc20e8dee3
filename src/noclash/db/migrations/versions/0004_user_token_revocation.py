"""users.token_revoked_at: an API token can be revoked and rotated.

A revoked user keeps its row (its chatbots stay owned), its stored hash is replaced by the
hash of a value nobody was shown, and ``token_revoked_at`` says when, so ``noclash user
list`` can tell a revoked account from an active one. ``noclash user rotate-token`` gives it
a new token and clears the mark.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    # A nullable column with no default: a plain ADD COLUMN on both engines (no rebuild).
    op.add_column("users", sa.Column("token_revoked_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_revoked_at")
