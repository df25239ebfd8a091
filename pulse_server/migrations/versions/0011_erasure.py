"""erasure: a record per erased range (user, days, time; never a value), each exactly-once result's day,
and a push that waits for an erasure of its user and is redone if one came since it read

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_SET = """sleep_hours = r.sleep_hours, hrv_ms = r.hrv_ms, hrv_method = r.hrv_method, steps = r.steps,
    weight_kg = r.weight_kg, note = r.note, score = r.score, score_version = r.score_version,
    deleted = r.deleted, sleep_hours_hlc = r.sleep_hours_hlc, sleep_hours_src = r.sleep_hours_src,
    hrv_ms_hlc = r.hrv_ms_hlc, hrv_ms_src = r.hrv_ms_src, steps_hlc = r.steps_hlc, steps_src = r.steps_src,
    weight_kg_hlc = r.weight_kg_hlc, weight_kg_src = r.weight_kg_src, note_hlc = r.note_hlc,
    note_src = r.note_src, deleted_hlc = r.deleted_hlc, deleted_src = r.deleted_src, updated_at = now()"""
_COLUMNS = """date, sleep_hours, hrv_ms, hrv_method, steps, weight_kg, note, score, score_version, deleted,
    sleep_hours_hlc, sleep_hours_src, hrv_ms_hlc, hrv_ms_src, steps_hlc, steps_src, weight_kg_hlc, weight_kg_src,
    note_hlc, note_src, deleted_hlc, deleted_src"""

# pulse_push_write as migration 0007 made it, with two changes:
# - first it waits for an erasure of the user in progress (an erasure holds this lock exclusively) and
#   checks that no erasure was made since the push read the user's erasures (`p_erasure`, the highest
#   id it saw): its mutations were judged without that one, so it raises PU001 and the push is redone
#   under locks (docs/erasure.md, "Writes racing an erasure");
# - each result may carry "date" (the mutation's day), stored in its own column so an erasure can
#   remove the results of the days it erases, and left out of the result replays are answered with.
_FUNCTION = """
CREATE FUNCTION pulse_push_write(p_user bigint, p_client text, p_entries jsonb, p_results jsonb,
                                 p_audit jsonb, p_erasure bigint)
RETURNS TABLE (txid text, lsn text) LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    wanted bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('erasure:' || p_user::text, 0));
    IF (SELECT coalesce(max(id), 0) FROM erasures WHERE user_id = p_user) <> p_erasure THEN
        RAISE EXCEPTION 'an erasure was made since the push read' USING ERRCODE = 'PU001';
    END IF;
    SELECT count(*) FILTER (WHERE x ? 'seen'), count(*) FILTER (WHERE NOT x ? 'seen')
      INTO wanted, changed FROM jsonb_array_elements(p_entries) AS x;
    IF wanted > 0 THEN
        UPDATE entries e SET {set}
          FROM jsonb_array_elements(p_entries) AS x, jsonb_populate_record(NULL::entries, x) AS r
         WHERE x ? 'seen' AND e.user_id = p_user AND e.date = r.date AND e.xmin = (x->>'seen')::xid;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed <> wanted THEN
            RAISE EXCEPTION 'an entry changed since it was read' USING ERRCODE = 'PU001';
        END IF;
        SELECT count(*) INTO changed FROM jsonb_array_elements(p_entries) AS x WHERE NOT x ? 'seen';
    END IF;
    IF changed > 0 THEN
        wanted := changed;
        INSERT INTO entries (user_id, {columns}, updated_at)
        SELECT p_user, {columns}, now()
          FROM jsonb_populate_recordset(NULL::entries,
               (SELECT jsonb_agg(x) FROM jsonb_array_elements(p_entries) AS x WHERE NOT x ? 'seen'))
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
    # One row per erasure: whose entries, which days (NULL: open-ended), when (the server's clock, the time
    # writes are judged against) and whether the whole account went. It holds no value: devices fetch
    # these rows to drop the same days (GET /v1/erasures), and pushes refuse writes made before them.
    op.execute(
        """
        CREATE TABLE erasures (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            date_from date,
            date_to date,
            erased_ms bigint NOT NULL,
            whole_account boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK (date_from IS NULL OR date_to IS NULL OR date_from <= date_to)
        )
        """
    )
    op.execute("CREATE INDEX erasures_user ON erasures (user_id, id)")
    # The replication reader sees each erasure in the stream, in order with the entries' changes: it removes
    # every earlier change of the erased days from the shape log (pulse_server/replication/reader.py).
    op.execute("ALTER PUBLICATION pulse_shapes ADD TABLE erasures")
    # The day of the mutation each exactly-once result answers (NULL for results recorded before this, and
    # for a mutation whose date was not a date): an erasure deletes the results of the days it erases.
    op.execute("ALTER TABLE applied_mutations ADD COLUMN date date")
    op.execute("DROP FUNCTION pulse_push_write(bigint, text, jsonb, jsonb, jsonb)")
    op.execute(_FUNCTION.format(set=_SET, columns=_COLUMNS))


def downgrade() -> None:
    op.execute("DROP FUNCTION pulse_push_write(bigint, text, jsonb, jsonb, jsonb, bigint)")
    previous = (_FUNCTION.format(set=_SET, columns=_COLUMNS)
                .replace(", p_erasure bigint)", ")")
                .replace(", date, applied_at)", ", applied_at)")
                .replace("r - 'digest' - 'date'", "r - 'digest'")
                .replace(",\n           (r->>'date')::date, now()", ", now()"))
    start = previous.index("    PERFORM pg_advisory_xact_lock_shared")
    end = previous.index("    SELECT count(*) FILTER")
    op.execute(previous[:start] + previous[end:])
    op.execute("ALTER TABLE applied_mutations DROP COLUMN date")
    op.execute("ALTER PUBLICATION pulse_shapes DROP TABLE erasures")
    op.execute("DROP TABLE erasures")
