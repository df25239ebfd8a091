// The local view: the server's rows (from the shape) with the device's mutations applied on top,
// merged per field exactly as the server merges (sync/merge.py, lww@2: a hand-set value beats an
// imported one, then the later stamp wins). Re-applying a mutation the server copy already shows
// changes nothing, so acknowledged mutations stay on top until the shape has caught up with them.

import { dayScore } from './score.js';

export const MERGE_FIELDS = ['sleep_hours', 'hrv_ms', 'steps', 'weight_kg', 'note'];
const COMPANIONS = { hrv_ms: ['hrv_ms', 'hrv_method'] };
const RECENT_MS = 3_600_000;
export const KEEP_DONE_MS = 30 * 86_400_000; // acknowledged changes kept 30 days, as the CLI's KEEP_ACKED

const rank = (source, stamp) => [source === 'manual' ? 1 : 0, stamp || ''];
const above = (a, b) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);

const STAMPED = [...MERGE_FIELDS, 'deleted'];
const unescape = (text) => (text === '~' ? null : decodeURIComponent(text));

/**
 * A shape row's `stamps` column (docs/shapes.md, "Stamps") as the twelve columns it folds:
 * `<hlc> <src>` per field in STAMPED order, `;` between, `=` for the same as the last one given.
 */
export function unfoldStamps(text) {
  const out = {};
  for (const name of STAMPED) { out[`${name}_hlc`] = null; out[`${name}_src`] = null; }
  if (!text) return out;
  const parts = text.split(';');
  if (parts.length !== STAMPED.length) throw new Error(`stamps: ${JSON.stringify(text)} has ${parts.length} parts`);
  let last = null;
  STAMPED.forEach((name, i) => {
    const part = parts[i];
    if (part === '') return;
    if (part !== '=') {
      const space = part.indexOf(' ');
      if (space < 0) throw new Error(`stamps: part ${JSON.stringify(part)} is not '<hlc> <src>'`);
      last = [unescape(part.slice(0, space)), unescape(part.slice(space + 1))];
    }
    if (last === null) throw new Error(`stamps: ${JSON.stringify(text)} repeats before any stamp`);
    [out[`${name}_hlc`], out[`${name}_src`]] = last;
  });
  return out;
}

/** A shape message's value with its `stamps` column (when it has one) unfolded into the twelve columns. */
export function unfoldedValue(value) {
  if (!('stamps' in value)) return value;
  const { stamps, ...rest } = value;
  return { ...rest, ...unfoldStamps(stamps) };
}

/** A stored row (Postgres text values, stamps unfolded) as an entry of the view. */
export function entryFromRow(row) {
  const entry = {
    date: row.date, hrv_method: row.hrv_method ?? null, score: row.score ?? null,
    deleted: row.deleted === 't' || row.deleted === 'true', stamps: {}, sources: {}, pending: false, localScore: false,
  };
  for (const name of MERGE_FIELDS) {
    entry[name] = row[name] ?? null;
    entry.stamps[name] = row[`${name}_hlc`] ?? null;
    entry.sources[name] = row[`${name}_src`] ?? null;
  }
  entry.stamps.deleted = row.deleted_hlc ?? null;
  return entry;
}

function emptyEntry(date) {
  return entryFromRow({ date });
}

const text = (v) => (v === null || v === undefined ? null : String(v));

/**
 * Apply one mutation ({op, fields, hlc}) to an entry in place; a device's own writes are `manual`.
 * Returns whether it changed anything.
 */
export function applyMutation(entry, mutation) {
  let changed = false;
  const source = mutation.source || 'manual';
  const stamp = mutation.hlc;
  const incomingFor = (name) => {
    if (mutation.op === 'delete') return Object.fromEntries((COMPANIONS[name] || [name]).map((p) => [p, null]));
    const parts = COMPANIONS[name] || [name];
    if (!parts.some((p) => p in mutation.fields)) return null;
    const incoming = Object.fromEntries(parts.map((p) => [p, text(mutation.fields[p])]));
    if (name === 'hrv_ms' && incoming.hrv_ms === null) incoming.hrv_method = null;
    return incoming;
  };
  for (const name of MERGE_FIELDS) {
    const incoming = incomingFor(name);
    if (incoming === null) continue;
    const stored = entry.stamps[name];
    if (stored === stamp) continue;
    if (stored === null || above(rank(source, stamp), rank(entry.sources[name], stored))) {
      Object.assign(entry, incoming);
      entry.stamps[name] = stamp;
      entry.sources[name] = source;
      changed = true;
    }
  }
  if (mutation.op === 'delete' && (entry.stamps.deleted || '') < stamp) {
    entry.stamps.deleted = stamp;
    changed = true;
  }
  const tomb = entry.stamps.deleted;
  entry.deleted = Boolean(tomb) && MERGE_FIELDS.every((f) => (entry.stamps[f] || '') <= tomb);
  return changed;
}

/** Which outbox rows the view applies: pending ones, and acknowledged ones the shape may not show yet. */
export function overlaid(outbox, pulledLsn, nowMs) {
  const pulled = BigInt(pulledLsn || '0');
  return outbox
    .filter((m) => m.status === 'pending' || (m.status === 'done' && (
      BigInt(m.lsn || '0') >= pulled || nowMs - (m.sent_at || 0) < RECENT_MS)))
    .sort((a, b) => a.seq - b.seq);
}

/**
 * Acknowledged outbox rows kept past their window (KEEP_DONE_MS after the answer, as the CLI keeps its
 * own) and no longer applied by the view: their seqs, to delete. The outbox stays bounded by the recent
 * writes, not by every write ever made; pending and rejected rows are never among them.
 */
export function expired(outbox, pulledLsn, nowMs) {
  const applied = new Set(overlaid(outbox, pulledLsn, nowMs).map((m) => m.seq));
  return outbox.filter((m) => m.status === 'done' && !applied.has(m.seq) && nowMs - (m.sent_at || 0) > KEEP_DONE_MS)
    .map((m) => m.seq);
}

/** The view: entries by date (tombstones included, flagged `deleted`). */
export function buildView(rules, rows, outbox, pulledLsn, nowMs) {
  const byDate = new Map();
  for (const row of rows) if (row.date) byDate.set(row.date, entryFromRow(row));
  for (const m of overlaid(outbox, pulledLsn, nowMs)) {
    const entry = byDate.get(m.date) || emptyEntry(m.date);
    byDate.set(m.date, entry);
    const changed = applyMutation(entry, m);
    entry.pending = entry.pending || m.status === 'pending';
    entry.localScore = entry.localScore || changed;
  }
  for (const entry of byDate.values()) {
    if (entry.localScore && rules) {
      entry.score = entry.deleted ? null : dayScore(rules, entry.sleep_hours, entry.hrv_ms, entry.steps);
      entry.score = entry.score === null ? null : String(entry.score);
    }
  }
  return byDate;
}

const NUMERIC = ['sleep_hours', 'hrv_ms', 'steps', 'weight_kg'];

/** A value of the view as a conflict record shows it (sync/merge.py `shown`): numbers as numbers. */
function shownValue(name, value) {
  if (value === null || value === undefined) return null;
  return NUMERIC.includes(name) ? Number(value) : String(value);
}

const same = (a, b) => (a ?? null) === (b ?? null);

/**
 * sync/conflict_state.py: a recorded conflict's state, judged from the entry as it is now (here: the
 * local view, so an edit made on this device counts at once). `dismissed`; else `open` while the
 * field's stamp is the kept one; `reasserted` when the field holds the lost value again; else
 * `superseded`.
 */
export function conflictState(conflict, entry) {
  const { field, lost } = conflict;
  if (conflict.dismissed) return 'dismissed';
  if (!entry || !MERGE_FIELDS.includes(field)) return 'superseded';
  if (same(entry.stamps[field], conflict.kept_hlc)) return 'open';
  const parts = COMPANIONS[field] || [field];
  let holdsLost;
  if (parts.length === 1) holdsLost = same(shownValue(field, entry[field]), lost);
  else {
    holdsLost = lost !== null && typeof lost === 'object' && Object.keys(lost).length === parts.length
      && parts.every((p) => Object.hasOwn(lost, p) && same(shownValue(p, entry[p]), lost[p]));
  }
  return holdsLost ? 'reasserted' : 'superseded';
}

/** The latest entry before `date` that has a weight (for the weight-change warning). */
export function previousWeight(view, date) {
  let best = null;
  for (const entry of view.values()) {
    if (entry.deleted || entry.weight_kg === null || entry.date >= date) continue;
    if (!best || entry.date > best.date) best = entry;
  }
  return best;
}
