"""sign-in throttling shared by every server instance: failed attempts per (username, address) and per address

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # key: "pair:<address>/<username as a JSON string>" or "addr:<address>" (pulse_server/ratelimit.py). A row is locked
    # while one attempt is counted, so every worker and instance counts exactly; rows forgotten a day
    # after their last failure are deleted as attempts go.
    op.execute("CREATE TABLE login_throttle (key text PRIMARY KEY, failures integer NOT NULL DEFAULT 0,"
               " last_failure timestamptz, blocked_until timestamptz)")


def downgrade() -> None:
    op.execute("DROP TABLE login_throttle")
