"""the replication reader polls a write counter: no NOTIFY on every write to entries

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
    # The statement trigger on entries did NOTIFY, and a notifying commit takes a cluster-wide lock, so
    # it serialised every write to entries. It bumps a sequence instead: not transactional, no lock
    # held to commit, and the replication reader polls it (one cheap query) to learn that entries
    # changed in this database, rather than peeking whenever any database in the cluster writes WAL.
    op.execute("CREATE SEQUENCE pulse_entries_writes")
    op.execute("DROP TRIGGER entries_wake_reader ON entries")
    op.execute("DROP FUNCTION pulse_wake_reader()")
    op.execute(
        """
        CREATE FUNCTION pulse_count_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM nextval('pulse_entries_writes');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER entries_count_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON entries"
        " FOR EACH STATEMENT EXECUTE FUNCTION pulse_count_write()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER entries_count_write ON entries")
    op.execute("DROP FUNCTION pulse_count_write()")
    op.execute("DROP SEQUENCE pulse_entries_writes")
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
