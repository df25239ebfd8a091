"""users keep the zone their devices last pushed from: dates are judged against the user's local date

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Minutes east of UTC at the user's last push (NULL: never told): "today" and "one day ahead" are the
    # user's, and a coach's views of an athlete follow the athlete's calendar (docs/sync.md, "Clocks").
    op.execute("ALTER TABLE users ADD COLUMN utc_offset_min smallint"
               " CHECK (utc_offset_min BETWEEN -840 AND 840)")


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN utc_offset_min")
