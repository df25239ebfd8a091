"""shape rows keep their snapshot message, encoded once by the replication reader

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The row's snapshot message (all columns) as JSON text, written by the reader with the row. NULL
    # for rows written before this column existed or copied in by a backfill: those are encoded when
    # served.
    op.execute("ALTER TABLE shape_rows ADD COLUMN message text")


def downgrade() -> None:
    op.execute("ALTER TABLE shape_rows DROP COLUMN message")
