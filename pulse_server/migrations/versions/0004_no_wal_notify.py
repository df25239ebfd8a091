"""the replication reader polls the WAL position: no NOTIFY on every write to entries

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A notifying commit takes a cluster-wide lock, so this trigger serialised every write to entries.
    op.execute("DROP TRIGGER entries_wake_reader ON entries")
    op.execute("DROP FUNCTION pulse_wake_reader()")


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION pulse_wake_reader() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pulse_wal', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER entries_wake_reader AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON entries"
        " FOR EACH STATEMENT EXECUTE FUNCTION pulse_wake_reader()"
    )
