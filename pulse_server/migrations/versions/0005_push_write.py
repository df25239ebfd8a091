"""the push writes a batch in one statement: pulse_push_write, a compare-and-set on what it read

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Every value column of entries, written from the merged rows the server sends as one JSON array.
_SET = """sleep_hours = r.sleep_hours, hrv_ms = r.hrv_ms, hrv_method = r.hrv_method, steps = r.steps,
    weight_kg = r.weight_kg, note = r.note, score = r.score, score_version = r.score_version,
    deleted = r.deleted, sleep_hours_hlc = r.sleep_hours_hlc, sleep_hours_src = r.sleep_hours_src,
    hrv_ms_hlc = r.hrv_ms_hlc, hrv_ms_src = r.hrv_ms_src, steps_hlc = r.steps_hlc, steps_src = r.steps_src,
    weight_kg_hlc = r.weight_kg_hlc, weight_kg_src = r.weight_kg_src, note_hlc = r.note_hlc,
    note_src = r.note_src, deleted_hlc = r.deleted_hlc, deleted_src = r.deleted_src, updated_at = now()"""
_COLUMNS = """date, sleep_hours, hrv_ms, hrv_method, steps, weight_kg, note, score, score_version, deleted,
    sleep_hours_hlc, sleep_hours_src, hrv_ms_hlc, hrv_ms_src, steps_hlc, steps_src, weight_kg_hlc, weight_kg_src,
    note_hlc, note_src, deleted_hlc, deleted_src"""


def upgrade() -> None:
    # The push reads a batch's earlier results and entries without locks (one statement), merges in the
    # server, and writes everything here, in the statement's own transaction, only if nothing it read has
    # changed since: each existing day's row must still be the version read (its xmin, sent as "seen"),
    # no new day may have appeared, and no seq may have been recorded meanwhile. Otherwise it raises
    # PU001, which rolls all of it back, and the server does the batch again under locks.
    op.execute(
        f"""
        CREATE FUNCTION pulse_push_write(p_user bigint, p_client text, p_entries jsonb, p_results jsonb,
                                         p_audit jsonb)
        RETURNS TABLE (txid text, lsn text) LANGUAGE plpgsql AS $$
        DECLARE
            changed bigint;
            wanted bigint;
        BEGIN
            SELECT count(*) FILTER (WHERE x ? 'seen'), count(*) FILTER (WHERE NOT x ? 'seen')
              INTO wanted, changed FROM jsonb_array_elements(p_entries) AS x;
            IF wanted > 0 THEN
                -- Rows are locked as they are updated, in the order the server sends them (by date, as the
                -- locked path takes them); a deadlock all the same is detected, and the push retried.
                UPDATE entries e SET {_SET}
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
                INSERT INTO entries (user_id, {_COLUMNS}, updated_at)
                SELECT p_user, {_COLUMNS}, now()
                  FROM jsonb_populate_recordset(NULL::entries,
                       (SELECT jsonb_agg(x) FROM jsonb_array_elements(p_entries) AS x WHERE NOT x ? 'seen'))
                ON CONFLICT (user_id, date) DO NOTHING;
                GET DIAGNOSTICS changed = ROW_COUNT;
                IF changed <> wanted THEN
                    RAISE EXCEPTION 'an entry was created since it was read' USING ERRCODE = 'PU001';
                END IF;
            END IF;
            INSERT INTO applied_mutations (user_id, client_id, seq, result, applied_at)
            SELECT p_user, p_client, (r->>'seq')::bigint, r, now() FROM jsonb_array_elements(p_results) AS r
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
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION pulse_push_write(bigint, text, jsonb, jsonb, jsonb)")
