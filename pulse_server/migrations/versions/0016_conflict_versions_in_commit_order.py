"""a conflict's version is taken under its user's conflicts lock, which reading the conflicts waits for:
a device asking for those after the version it holds can no longer pass one still being committed

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# Versions come from a sequence, taken when a row is written, not when its transaction commits: a push
# that took 100 and committed after one that took 101 left 100 behind a device that had already read up
# to 101. Every insert or update of a conflict (a push's audit, a dismissal) now takes its version under
# a transaction lock on its user's conflicts, shared among writers; `GET /v1/conflicts` takes the same
# lock exclusively before it reads, so it waits for the versions still being committed and every later
# one is above what it returns (docs/api.md, `GET /v1/conflicts`).
_FUNCTION = """
CREATE FUNCTION pulse_conflict_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('conflicts:' || NEW.user_id::text, 0));
    NEW.version := nextval('conflict_version_seq');
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    op.execute("CREATE TRIGGER conflicts_version BEFORE INSERT OR UPDATE ON conflicts"
               " FOR EACH ROW EXECUTE FUNCTION pulse_conflict_version()")


def downgrade() -> None:
    op.execute("DROP TRIGGER conflicts_version ON conflicts")
    op.execute("DROP FUNCTION pulse_conflict_version()")
