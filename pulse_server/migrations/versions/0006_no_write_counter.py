"""the replication reader streams the slot: entries no longer count their writes for it

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The reader polled this counter to know when to peek; the walsender now wakes it when a
    # transaction commits, so the per-statement nextval is pure cost on every write.
    op.execute("DROP TRIGGER entries_count_write ON entries")
    op.execute("DROP FUNCTION pulse_count_write()")
    op.execute("DROP SEQUENCE pulse_entries_writes")


def downgrade() -> None:
    op.execute("CREATE SEQUENCE pulse_entries_writes")
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
