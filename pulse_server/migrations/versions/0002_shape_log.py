"""shape log: publication, shape log and current rows, WAL wake-up trigger

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The tables whose changes reach clients through /v1/shape.
    op.execute("CREATE PUBLICATION pulse_shapes FOR TABLE entries")
    # Every change, at the offset it is served at: (commit LSN, index in its transaction).
    op.execute(
        """
        CREATE TABLE shape_log (
            lsn bigint NOT NULL,
            op integer NOT NULL,
            txid bigint NOT NULL,
            user_id bigint NOT NULL,
            date date NOT NULL,
            operation text NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
            value jsonb NOT NULL,
            PRIMARY KEY (lsn, op)
        )
        """
    )
    op.execute("CREATE INDEX shape_log_user ON shape_log (user_id, lsn, op)")
    # The state the log has reached, row by row: what a snapshot is served from.
    op.execute(
        """
        CREATE TABLE shape_rows (
            user_id bigint NOT NULL,
            date date NOT NULL,
            value jsonb NOT NULL,
            lsn bigint NOT NULL,
            op integer NOT NULL,
            PRIMARY KEY (user_id, date)
        )
        """
    )
    # Where the log stands, and the generation that handles carry (bumped when the log is rebuilt).
    op.execute(
        """
        CREATE TABLE shape_state (
            id integer PRIMARY KEY CHECK (id = 1),
            head_lsn bigint NOT NULL DEFAULT 0,
            head_op integer NOT NULL DEFAULT 0,
            generation integer NOT NULL DEFAULT 1,
            log_id uuid NOT NULL DEFAULT gen_random_uuid(),  -- this log, not another database's
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("INSERT INTO shape_state (id) VALUES (1)")
    # Wake the replication reader when entries change (by the server or by hand in psql): no polling.
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
    # A grant given or revoked changes a coach's scope: held live requests must answer 409 at once.
    op.execute(
        """
        CREATE FUNCTION pulse_grants_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pulse_grants', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER grants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON grants"
        " FOR EACH STATEMENT EXECUTE FUNCTION pulse_grants_changed()"
    )
    # Each change of a user's scope gets a new version, so a handle is never handed out twice even
    # when a coach's set of athletes comes back to an earlier one (clients remember expired handles).
    op.execute("CREATE TABLE scope_versions (user_id bigint PRIMARY KEY, version bigint NOT NULL)")
    op.execute(
        """
        CREATE FUNCTION pulse_bump_scope() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO scope_versions VALUES (NEW.coach_id, 1)
                    ON CONFLICT (user_id) DO UPDATE SET version = scope_versions.version + 1;
            END IF;
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                INSERT INTO scope_versions VALUES (OLD.coach_id, 1)
                    ON CONFLICT (user_id) DO UPDATE SET version = scope_versions.version + 1;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER grants_scope_version AFTER INSERT OR UPDATE OR DELETE ON grants"
        " FOR EACH ROW EXECUTE FUNCTION pulse_bump_scope()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER grants_scope_version ON grants")
    op.execute("DROP FUNCTION pulse_bump_scope()")
    op.execute("DROP TABLE scope_versions")
    op.execute("DROP TRIGGER grants_changed ON grants")
    op.execute("DROP FUNCTION pulse_grants_changed()")
    op.execute("DROP TRIGGER entries_wake_reader ON entries")
    op.execute("DROP FUNCTION pulse_wake_reader()")
    op.execute("DROP TABLE shape_state")
    op.execute("DROP TABLE shape_rows")
    op.execute("DROP TABLE shape_log")
    op.execute("DROP PUBLICATION pulse_shapes")
