"""the shape log knows the slot and database it follows (to rebuild itself when they change), when
each change was logged and the horizon below which it was trimmed (bounded storage)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # What the log was built from: the slot it follows and the database's system identifier and timeline.
    # The reader rebuilds the log when any of them is not what it finds (docs/shapes.md, "Self-healing").
    op.execute(
        """
        ALTER TABLE shape_state
            ADD COLUMN slot_name text,
            ADD COLUMN system_identifier text,
            ADD COLUMN timeline integer,
            ADD COLUMN horizon_lsn bigint NOT NULL DEFAULT 0,
            ADD COLUMN horizon_op integer NOT NULL DEFAULT 0,
            ADD COLUMN rebuilt_at timestamptz,
            ADD COLUMN rebuild_reason text
        """
    )
    # A database already followed by its slot keeps its log: record what it follows now. Without the
    # slot (a new database), the columns stay NULL and the first reader builds the log.
    op.execute(
        """
        UPDATE shape_state s SET slot_name = r.slot_name, system_identifier = c.system_identifier::text,
               timeline = ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
          FROM pg_replication_slots r, pg_control_system() c
         WHERE r.database = current_database()
           AND r.slot_name = left('pulse_shapes_' || regexp_replace(lower(current_database()), '[^a-z0-9]', '_', 'g'),
                                  63)
           AND r.wal_status IS DISTINCT FROM 'lost'
        """
    )
    # When each change was logged: compaction trims what is older than its retention window. A constant
    # default (now() is stable), so existing rows take the migration's time without a table rewrite.
    op.execute("ALTER TABLE shape_log ADD COLUMN logged_at timestamptz NOT NULL DEFAULT now()")


def downgrade() -> None:
    op.execute("ALTER TABLE shape_log DROP COLUMN logged_at")
    op.execute(
        """
        ALTER TABLE shape_state
            DROP COLUMN rebuild_reason, DROP COLUMN rebuilt_at, DROP COLUMN horizon_op, DROP COLUMN horizon_lsn,
            DROP COLUMN timeline, DROP COLUMN system_identifier, DROP COLUMN slot_name
        """
    )
