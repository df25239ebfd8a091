"""the push's write finds each day it updates through the entries' key (user, date), instead of joining
the batch to every entry of the user: its cost no longer grows with the user's history

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# pulse_push_write as migration 0014 left it, written out whole, with three changes:
# - the days of the batch are read out of p_entries once, in date order, into `days`; the day locks are
#   taken over that array in one statement (the same order, the same locks);
# - the days read with a version (`seen`) are updated one by one, each through the entries' primary key
#   (user, date): a plan that cannot change with the statistics. Before, one UPDATE joined the batch's
#   JSON to the entries, and the planner joined it to every entry the user had, decoding an element per
#   pair: for a batch of 100 days of a user with 300, 4,447 decodes and 28 ms (4 ms now); for a push of 6
#   days of a user with 1,500, 1,505 rows fetched (tests/server/test_push_write_cost.py);
# - the new days are decoded element by element, without building a second JSON array first.
# What it checks, what it raises (PU001) and what it writes are unchanged.
_FUNCTION = """
CREATE FUNCTION pulse_push_write(p_user bigint, p_client text, p_entries jsonb, p_results jsonb,
                                 p_audit jsonb, p_erasure bigint)
RETURNS TABLE (txid text, lsn text) LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    wanted bigint;
    days date[];
    found_one bigint;
    d record;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('erasure:' || p_user::text, 0));
    IF (SELECT coalesce(max(id), 0) FROM erasures WHERE user_id = p_user) <> p_erasure THEN
        RAISE EXCEPTION 'an erasure was made since the push read' USING ERRCODE = 'PU001';
    END IF;
    days := ARRAY(SELECT DISTINCT (x->>'date')::date FROM jsonb_array_elements(p_entries) AS x ORDER BY 1);
    -- unnest keeps the array's (date) order: every writer takes the day locks in that order
    PERFORM pg_advisory_xact_lock(hashtextextended('entry:' || p_user::text || ':' || day::text, 0))
       FROM unnest(days) AS day;
    SELECT count(*) FILTER (WHERE x ? 'seen'), count(*) FILTER (WHERE NOT x ? 'seen')
      INTO wanted, changed FROM jsonb_array_elements(p_entries) AS x;
    IF wanted > 0 THEN
        changed := 0;
        FOR d IN SELECT (x->>'seen')::xid AS seen, p.*
                   FROM jsonb_array_elements(p_entries) AS x, jsonb_populate_record(NULL::entries, x) AS p
                  WHERE x ? 'seen' LOOP
            UPDATE entries e SET {set}
             WHERE e.user_id = p_user AND e.date = d.date AND e.xmin = d.seen;
            GET DIAGNOSTICS found_one = ROW_COUNT;
            changed := changed + found_one;
        END LOOP;
        IF changed <> wanted THEN
            RAISE EXCEPTION 'an entry changed since it was read' USING ERRCODE = 'PU001';
        END IF;
        SELECT count(*) INTO changed FROM jsonb_array_elements(p_entries) AS x WHERE NOT x ? 'seen';
    END IF;
    IF changed > 0 THEN
        wanted := changed;
        INSERT INTO entries (user_id, {columns}, updated_at)
        SELECT p_user, {columns}, now()
          FROM (SELECT p.* FROM jsonb_array_elements(p_entries) AS x, jsonb_populate_record(NULL::entries, x) AS p
                 WHERE NOT x ? 'seen') AS r
        ON CONFLICT (user_id, date) DO NOTHING;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed <> wanted THEN
            RAISE EXCEPTION 'an entry was created since it was read' USING ERRCODE = 'PU001';
        END IF;
    END IF;
    INSERT INTO applied_mutations (user_id, client_id, seq, result, digest, date, applied_at)
    SELECT p_user, p_client, (r->>'seq')::bigint, r - 'digest' - 'date', decode(r->>'digest', 'hex'),
           (r->>'date')::date, now()
      FROM jsonb_array_elements(p_results) AS r
    ON CONFLICT (user_id, client_id, seq) DO NOTHING;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed <> jsonb_array_length(p_results) THEN
        RAISE EXCEPTION 'a mutation was recorded since it was read' USING ERRCODE = 'PU001';
    END IF;
    IF jsonb_array_length(p_audit) > 0 THEN
        INSERT INTO conflicts (user_id, date, client_id, seq, field, kept, lost, kept_hlc, lost_hlc, rule,
                               clamped, created_at)
        SELECT p_user, a.date, p_client, a.seq, a.field, coalesce(a.kept, 'null'), coalesce(a.lost, 'null'),
               a.kept_hlc, a.lost_hlc, a.rule, a.clamped, now()
          FROM jsonb_to_recordset(p_audit) AS a(date date, seq bigint, field text, kept jsonb, lost jsonb,
               kept_hlc text, lost_hlc text, rule text, clamped boolean);
    END IF;
    RETURN QUERY SELECT pg_current_xact_id()::text, pg_current_wal_insert_lsn()::text;
END $$
"""


def upgrade() -> None:
    m0011 = importlib.import_module("pulse_server.migrations.versions.0011_erasure")
    op.execute("DROP FUNCTION pulse_push_write(bigint, text, jsonb, jsonb, jsonb, bigint)")
    # 0011's SET list reads the columns of `r`; here the loop's row is `d`
    op.execute(_FUNCTION.format(set=m0011._SET.replace("= r.", "= d."), columns=m0011._COLUMNS))


def downgrade() -> None:
    m0014 = importlib.import_module("pulse_server.migrations.versions.0014_push_write_day_locks")
    op.execute("DROP FUNCTION pulse_push_write(bigint, text, jsonb, jsonb, jsonb, bigint)")
    op.execute(m0014._with_day_locks())
