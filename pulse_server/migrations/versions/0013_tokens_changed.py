"""a NOTIFY when tokens are revoked or removed, or a user's name or role changes: each server process
keeps who a token is (and what it may see) in memory for live shape requests, and forgets it on this
(docs/shapes.md, "Live mode")

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The payload names the users whose tokens changed (a process forgets only theirs, and ends only
    # their held requests); an empty payload means everyone. Every statement that updates or deletes
    # tokens notifies, whatever path made it (`pulse-server token revoke`, a new password, an erasure
    # of the whole account, a user removed: ON DELETE CASCADE deletes through this table too).
    op.execute(
        """
        CREATE FUNCTION pulse_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            users text;
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                users := '';
            ELSE
                SELECT string_agg(DISTINCT user_id::text, ',') INTO users FROM gone;
                IF users IS NULL THEN
                    RETURN NULL;  -- no row changed
                END IF;
                IF length(users) > 7000 THEN
                    users := '';  -- over a notification's payload limit: everyone
                END IF;
            END IF;
            PERFORM pg_notify('pulse_tokens', users);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER tokens_updated AFTER UPDATE ON tokens REFERENCING OLD TABLE AS gone"
        " FOR EACH STATEMENT EXECUTE FUNCTION pulse_tokens_changed()"
    )
    op.execute(
        "CREATE TRIGGER tokens_deleted AFTER DELETE ON tokens REFERENCING OLD TABLE AS gone"
        " FOR EACH STATEMENT EXECUTE FUNCTION pulse_tokens_changed()"
    )
    op.execute(
        "CREATE TRIGGER tokens_truncated AFTER TRUNCATE ON tokens"
        " FOR EACH STATEMENT EXECUTE FUNCTION pulse_tokens_changed()"
    )
    # A principal carries its username and role, a coach's scope its athletes' usernames: a change of
    # either makes every process forget everyone (rare; `UPDATE OF` leaves out the push's zone update).
    op.execute(
        """
        CREATE FUNCTION pulse_users_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pulse_tokens', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER users_renamed AFTER UPDATE OF username, is_coach ON users"
        " FOR EACH STATEMENT EXECUTE FUNCTION pulse_users_renamed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER users_renamed ON users")
    op.execute("DROP FUNCTION pulse_users_renamed()")
    op.execute("DROP TRIGGER tokens_truncated ON tokens")
    op.execute("DROP TRIGGER tokens_deleted ON tokens")
    op.execute("DROP TRIGGER tokens_updated ON tokens")
    op.execute("DROP FUNCTION pulse_tokens_changed()")
