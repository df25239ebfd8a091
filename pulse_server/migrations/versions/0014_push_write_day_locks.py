"""the push's write takes each day's lock, as every other writer of a day does: a push under locks that
found no row for a day no longer overwrites the row a concurrent push created meanwhile

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# pulse_push_write as migration 0011 made it, with one change. A push under locks (`Reconciler.apply_batch`,
# and a REST write) holds each day's advisory lock from its read to its commit, and upserts the rows it
# found missing. The write of a push that read without locks took no such lock: its insert of a new day
# could commit between that push's read (no row) and its upsert, which then replaced the row, and the
# first push's values were lost although its result said applied. Now the write takes the lock of every
# day it writes, in date order (the order every writer takes them in, so none waits in a cycle), before
# any row: it waits for a push under locks to commit, and then finds that push's row (PU001, redone under
# locks), or holds the lock while that push waits to read.
_DAY_LOCKS = """    FOR day IN SELECT DISTINCT (x->>'date')::date FROM jsonb_array_elements(p_entries) AS x
                ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('entry:' || p_user::text || ':' || day::text, 0));
    END LOOP;
"""


def _previous() -> str:
    m0011 = importlib.import_module("pulse_server.migrations.versions.0011_erasure")
    text: str = m0011._FUNCTION.format(set=m0011._SET, columns=m0011._COLUMNS)
    return text


def _with_day_locks() -> str:
    text = _previous()
    text = text.replace("    wanted bigint;\n", "    wanted bigint;\n    day date;\n", 1)
    anchor = "    SELECT count(*) FILTER (WHERE x ? 'seen')"
    assert anchor in text
    return text.replace(anchor, _DAY_LOCKS + anchor, 1)


def upgrade() -> None:
    op.execute("DROP FUNCTION pulse_push_write(bigint, text, jsonb, jsonb, jsonb, bigint)")
    op.execute(_with_day_locks())


def downgrade() -> None:
    op.execute("DROP FUNCTION pulse_push_write(bigint, text, jsonb, jsonb, jsonb, bigint)")
    op.execute(_previous())
