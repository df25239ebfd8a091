"""each (user, client)'s high-water mark keeps when the newest of its pruned results had been applied: a
push at or below the mark stamped after that is another store's (a copy of the home), not a replay

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for marks folded before: not known, and their replays stay duplicates as they were
    op.add_column("client_high_water", sa.Column("pruned_before", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("client_high_water", "pruned_before")
