"""shape rows' stored snapshot messages are made again: the default columns now carry the twelve stamp
and source columns folded into one `stamps` column (docs/shapes.md, "Stamps")

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A NULL message is built when served (row by row, correct but slower) until maintenance stores it
    # again (pulse-server maintain, or the server's schedule: `fill_messages`). Clients hold handles of
    # the old default columns, which no longer match: they refetch.
    op.execute("UPDATE shape_rows SET message = NULL WHERE message IS NOT NULL")


def downgrade() -> None:
    op.execute("UPDATE shape_rows SET message = NULL WHERE message IS NOT NULL")
