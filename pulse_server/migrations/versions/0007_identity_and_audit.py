"""exactly-once by content: a digest per applied mutation, high-water seqs kept past their results;
conflicts a user can dismiss, versioned so devices fetch what changed

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# pulse_push_write as migration 0005 made it, but each result may carry "digest" (hex): it is stored in
# its own column and left out of the result that replays are answered with.
_FUNCTION = """
CREATE OR REPLACE FUNCTION pulse_push_write(p_user bigint, p_client text, p_entries jsonb, p_results jsonb,
                                            p_audit jsonb)
RETURNS TABLE (txid text, lsn text) LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    wanted bigint;
BEGIN
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
    INSERT INTO applied_mutations (user_id, client_id, seq, result, digest, applied_at)
    SELECT p_user, p_client, (r->>'seq')::bigint, r - 'digest', decode(r->>'digest', 'hex'), now()
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
    # SHA-256 of the mutation as the client sent it (docs/sync.md): a replay of a (client, seq) with other
    # content is a second store using the same identity, not a duplicate. NULL for rows recorded before.
    op.execute("ALTER TABLE applied_mutations ADD COLUMN digest bytea")
    # The highest seq of each (user, client) whose results were pruned (pulse-server maintain): a replay at
    # or below it is still a duplicate, never applied twice. Kept forever; one row per client.
    op.execute(
        """
        CREATE TABLE client_high_water (
            user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            client_id text NOT NULL,
            seq bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, client_id)
        )
        """
    )
    # Conflicts: dismissed by the user on any device; `version` grows with every insert and dismissal,
    # so a device fetches only what changed since the version it holds.
    op.execute("CREATE SEQUENCE conflict_version_seq")
    op.execute("ALTER TABLE conflicts ADD COLUMN dismissed_at timestamptz")
    op.execute("ALTER TABLE conflicts ADD COLUMN version bigint NOT NULL DEFAULT nextval('conflict_version_seq')")
    op.execute("CREATE INDEX conflicts_user_version ON conflicts (user_id, version)")
    op.execute("CREATE INDEX conflicts_created_at ON conflicts (created_at)")
    op.execute(_FUNCTION.format(set=_SET, columns=_COLUMNS))


def downgrade() -> None:
    op.execute(_FUNCTION.format(set=_SET, columns=_COLUMNS)
               .replace(", digest, applied_at", ", applied_at")
               .replace("r - 'digest', decode(r->>'digest', 'hex'), now()", "r, now()"))
    op.execute("DROP INDEX conflicts_created_at")
    op.execute("DROP INDEX conflicts_user_version")
    op.execute("ALTER TABLE conflicts DROP COLUMN version")
    op.execute("ALTER TABLE conflicts DROP COLUMN dismissed_at")
    op.execute("DROP SEQUENCE conflict_version_seq")
    op.execute("DROP TABLE client_high_water")
    op.execute("ALTER TABLE applied_mutations DROP COLUMN digest")
