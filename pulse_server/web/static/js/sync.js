// The sync engine: writes go to the outbox first; pushes go through POST /v1/sync/push in bounded
// batches; reads follow the user's shape (GET /v1/shape, the Electric protocol) into the local copy.
//
// Only these endpoints are used, with URLs relative to the app: /v1/auth/token, /v1/me, /v1/rules,
// /v1/sync/push, /v1/shape, /v1/conflicts. The cloud server and `pulse agent --serve` both serve them.

import { newClientId, nextStamp, parseStamp, formatStamp } from './hlc.js';
import { buildView, MERGE_FIELDS } from './replica.js';
import { getMeta, setMeta, transact } from './store.js';

const API = new URL('../v1/', location.href);
const PROTOCOL = 1;
const PUSH_BATCH = 100;
const OFFSET_TOLERANCE_MS = 1_000;
const SKEW_LIMIT_MS = 60_000;
const LIVE_ABORT_MS = 45_000;
const PERIODIC_MS = 30_000;
const MAX_BACKOFF_MS = 30_000;
const SHAPE_START = { handle: null, offset: '-1', cursor: null, upToDate: false };

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

class HttpError extends Error {
  constructor(status, body, retryAfterS) {
    super(body?.error?.message || `the server answered ${status}`);
    this.status = status;
    this.body = body;
    this.retryAfterS = retryAfterS;
  }
}

async function readJson(response) {
  try { return await response.json(); } catch { return null; }
}

export class Engine extends EventTarget {
  constructor() {
    super();
    this.token = null;
    this.username = null;
    this.rules = null;
    this.reachable = navigator.onLine;
    this.needsSignIn = false;
    this.lastError = null;
    this.syncing = false;
    this.generation = 0;
    this.pullController = null;
    this.pushing = null;
    this.pushAgain = false;
    this.backoffMs = 1_000;
    this.view = new Map();
    this.outbox = [];
    this.meta = {};
  }

  get online() { return navigator.onLine && this.reachable; }

  // -- lifecycle --------------------------------------------------------------------------------
  async start() {
    if (!(await getMeta('client_id'))) await setMeta('client_id', newClientId());
    this.token = (await getMeta('token')) || null;
    this.username = (await getMeta('username')) || null;
    this.rules = (await getMeta('rules')) || null;
    await this.refresh();
    addEventListener('online', () => { this.reachable = true; this.resume(); });
    addEventListener('offline', () => { this.reachable = false; this.pullController?.abort(); this.emit(); });
    setInterval(() => { if (this.token && navigator.onLine) this.push(); }, PERIODIC_MS);
    this.loadRules();
    if (this.token) this.resume();
  }

  /** Push what is queued and (re)start following the shape. */
  resume() {
    if (!this.token || this.needsSignIn) return;
    this.push();
    this.startPull();
    this.loadConflicts();
  }

  emit() { this.dispatchEvent(new Event('change')); }

  async refresh() {
    const [rows, outbox, metaPairs] = await transact(['rows', 'outbox', 'meta'], 'readonly', async (s) => [
      await s.rows.getAll(), await s.outbox.getAll(),
      await Promise.all(['shape', 'last_sync_ms', 'clock_offset_ms', 'conflicts', 'pulled_lsn'].map((k) => s.meta.get(k))),
    ]);
    const [shape, lastSync, offset, conflicts, pulledLsn] = metaPairs;
    this.meta = { shape: shape || SHAPE_START, lastSyncMs: lastSync || null, clockOffsetMs: offset || 0,
      conflicts: conflicts || [], pulledLsn: pulledLsn || '0' };
    this.outbox = outbox;
    this.view = buildView(this.rules, rows, outbox, this.meta.pulledLsn, Date.now());
    this.emit();
  }

  async request(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (this.token && !options.anonymous) headers.Authorization = `Bearer ${this.token}`;
    if (options.json !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(new URL(path, API), {
      method: options.method || 'GET', headers, cache: 'no-store', signal: options.signal,
      body: options.json === undefined ? undefined : JSON.stringify(options.json),
    });
    return response;
  }

  // -- account -----------------------------------------------------------------------------------
  async signIn(username, password) {
    let response;
    try {
      response = await this.request('auth/token', { method: 'POST', json: { username, password }, anonymous: true });
    } catch {
      throw new Error('cannot reach the server: signing in needs a connection');
    }
    const body = await readJson(response);
    if (!response.ok) throw new Error(body?.error?.message || `sign-in failed (${response.status})`);
    const token = body.access_token;
    const me = await this.request('me', { headers: { Authorization: `Bearer ${token}` }, anonymous: true });
    const who = await readJson(me);
    if (!me.ok) throw new Error(who?.error?.message || 'sign-in failed');
    if (who.role !== 'athlete') throw new Error(`${who.username} is a coach account: the app logs an athlete's own days`);
    const previous = await getMeta('username');
    await transact(['meta', 'rows', 'outbox'], 'readwrite', async (s) => {
      if (previous && previous !== who.username) {
        // Another person's copy and queue never travel under this account.
        await s.rows.clear();
        await s.outbox.clear();
        for (const key of ['shape', 'pulled_lsn', 'conflicts', 'last_sync_ms']) await s.meta.delete(key);
      }
      await s.meta.put(token, 'token');
      await s.meta.put(who.username, 'username');
      await s.meta.put(who.role, 'role');
    });
    this.token = token;
    this.username = who.username;
    this.needsSignIn = false;
    this.lastError = null;
    await this.loadRules();
    await this.refresh();
    this.resume();
  }

  /** Forget the account and everything of it on this device (the install keeps its id and clock). */
  async signOut() {
    this.generation += 1;
    this.pullController?.abort();
    await transact(['meta', 'rows', 'outbox'], 'readwrite', async (s) => {
      await s.rows.clear();
      await s.outbox.clear();
      for (const key of ['token', 'username', 'role', 'shape', 'pulled_lsn', 'conflicts', 'last_sync_ms']) {
        await s.meta.delete(key);
      }
    });
    this.token = null;
    this.username = null;
    this.needsSignIn = false;
    await this.refresh();
  }

  async loadRules() {
    try {
      const response = await this.request('rules', { anonymous: true });
      if (!response.ok) return;
      this.rules = await response.json();
      await setMeta('rules', this.rules);
      await this.refresh();
    } catch { /* offline: the cached rules stay */ }
  }

  async loadConflicts() {
    if (!this.token) return;
    try {
      const response = await this.request('conflicts?limit=50');
      if (response.status === 401) return this.authExpired();
      if (!response.ok) return;
      const body = await response.json();
      await setMeta('conflicts', body.conflicts);
      this.meta.conflicts = body.conflicts;
      this.emit();
    } catch { /* offline */ }
  }

  authExpired() {
    this.needsSignIn = true;
    this.generation += 1;
    this.pullController?.abort();
    this.emit();
  }

  // -- writes ------------------------------------------------------------------------------------
  /**
   * Queue one mutation: `fields` are the checked values to set (null clears), or op 'delete'.
   * `base` is the stamp of each replaced value in the view, the clock moves past every stamp seen.
   */
  async write(date, op, fields = {}) {
    const current = this.view.get(date);
    const touched = op === 'delete' ? MERGE_FIELDS : MERGE_FIELDS.filter((f) =>
      f in fields || (f === 'hrv_ms' && 'hrv_method' in fields));
    const base = Object.fromEntries(touched.map((f) => [f, current?.stamps[f] ?? null]));
    const seen = current ? Object.values(current.stamps) : [];
    const wire = {};
    for (const [name, value] of Object.entries(fields)) {
      wire[name] = value === null || name === 'note' || name === 'hrv_method' ? value : Number(value);
    }
    await transact(['meta', 'outbox'], 'readwrite', async (s) => {
      const node = await s.meta.get('client_id');
      const seq = (await s.meta.get('next_seq')) || 1;
      const offset = (await s.meta.get('clock_offset_ms')) || 0;
      const hlc = nextStamp(node, await s.meta.get('hlc_last'), Date.now(), offset, seen);
      await s.meta.put(seq + 1, 'next_seq');
      await s.meta.put(hlc, 'hlc_last');
      await s.outbox.put({ seq, date, op, fields: op === 'delete' ? {} : wire, base, hlc, status: 'pending',
        result: null, lsn: null, created_ms: Date.now() });
    });
    await this.refresh();
    this.push();
  }

  async discard(seq) {
    await transact(['outbox'], 'readwrite', (s) => s.outbox.delete(seq));
    await this.refresh();
  }

  // -- push --------------------------------------------------------------------------------------
  push() {
    if (!this.token || this.needsSignIn) return Promise.resolve();
    if (this.pushing) { this.pushAgain = true; return this.pushing; }
    this.pushing = (async () => {
      try {
        do {
          this.pushAgain = false;
          await this.pushAll();
        } while (this.pushAgain);
      } finally {
        this.pushing = null;
      }
    })();
    return this.pushing;
  }

  async pushAll() {
    let batchSize = PUSH_BATCH;
    let after = 0;
    for (;;) {
      const pending = this.outbox.filter((m) => m.status === 'pending' && m.seq > after).sort((a, b) => a.seq - b.seq);
      if (!pending.length) return;
      const batch = pending.slice(0, batchSize);
      this.syncing = true;
      this.emit();
      const sentAt = Date.now();
      let response;
      try {
        response = await this.request('sync/push', { method: 'POST', json: {
          protocol: PROTOCOL, client_id: await getMeta('client_id'),
          mutations: batch.map(({ seq, date, op, fields, base, hlc }) => ({ seq, date, op, fields, base, hlc })),
        } });
      } catch {
        this.syncing = false;
        this.reachable = false;
        this.emit();
        this.retryLater();
        return;
      }
      this.reachable = true;
      this.syncing = false;
      const body = await readJson(response);
      if (response.status === 401) return this.authExpired();
      if (response.status === 413 && batchSize > 1) { batchSize = Math.max(1, Math.floor(batchSize / 2)); continue; }
      if (response.status === 429 || response.status >= 500) {
        this.retryLater(Number(response.headers.get('retry-after')) || 0);
        return;
      }
      if (!response.ok) {
        this.lastError = body?.error?.message || `the server refused the push (${response.status})`;
        this.emit();
        return;
      }
      this.lastError = null;
      this.backoffMs = 1_000;
      const answered = await this.recordResults(batch, body, sentAt);
      if (answered.conflicts) this.loadConflicts();
      await this.refresh();
      if (!answered.count) return; // nothing answered: try again later rather than loop
      after = batch[batch.length - 1].seq;
    }
  }

  async recordResults(batch, body, sentAt) {
    const bySeq = new Map((body.results || []).map((r) => [r.seq, r]));
    const receivedAt = Date.now();
    let count = 0;
    let conflicts = 0;
    await transact(['meta', 'outbox'], 'readwrite', async (s) => {
      for (const m of batch) {
        const result = bySeq.get(m.seq);
        if (!result) continue;
        count += 1;
        const status = result.status === 'duplicate' ? (result.original_status || 'applied') : result.status;
        if (status === 'conflict') conflicts += 1;
        await s.outbox.put({ ...m, status: status === 'rejected' ? 'rejected' : 'done', result, lsn: body.lsn,
          sent_at: receivedAt });
      }
      // The server's clock is the reference (sync-protocol.md, clock sanity).
      if (Number.isInteger(body.server_time_ms)) {
        const offset = body.server_time_ms - Math.round((sentAt + receivedAt) / 2);
        await s.meta.put(Math.abs(offset) > OFFSET_TOLERANCE_MS ? offset : 0, 'clock_offset_ms');
        const last = parseStamp(await s.meta.get('hlc_last'));
        if (last && last.ms > body.server_time_ms + SKEW_LIMIT_MS) {
          await s.meta.put(formatStamp({ ms: body.server_time_ms, counter: 0, node: last.node }), 'hlc_last');
        }
      }
      await s.meta.put(receivedAt, 'last_sync_ms');
    });
    return { count, conflicts };
  }

  retryLater(floorS = 0) {
    const wait = Math.max(floorS * 1000, Math.random() * this.backoffMs);
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    setTimeout(() => { if (navigator.onLine) this.push(); }, wait);
  }

  // -- pull: the shape ---------------------------------------------------------------------------
  startPull() {
    this.generation += 1;
    this.pullController?.abort();
    this.pullLoop(this.generation);
  }

  async pullLoop(generation) {
    let backoff = 500;
    while (generation === this.generation && this.token && !this.needsSignIn) {
      if (!navigator.onLine) return; // the `online` event starts a new loop
      const shape = (await getMeta('shape')) || SHAPE_START;
      const params = new URLSearchParams({ table: 'entries', offset: shape.offset });
      if (shape.handle && shape.offset !== '-1') params.set('handle', shape.handle);
      if (shape.upToDate && shape.offset !== '-1') {
        params.set('live', 'true');
        if (shape.cursor) params.set('cursor', shape.cursor);
      }
      const controller = new AbortController();
      this.pullController = controller;
      const timer = setTimeout(() => controller.abort(), LIVE_ABORT_MS);
      let response;
      let messages;
      try {
        response = await this.request(`shape?${params}`, { signal: controller.signal });
        messages = response.ok ? await response.json() : await readJson(response);
      } catch {
        clearTimeout(timer);
        if (generation !== this.generation) return;
        if (controller.signal.aborted && navigator.onLine) continue; // our own 45 s limit: ask again
        this.reachable = false;
        this.emit();
        await sleep(backoff);
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
        continue;
      }
      clearTimeout(timer);
      if (generation !== this.generation) return;
      this.reachable = true;
      if (response.status === 401) return this.authExpired();
      if (response.status === 409 || response.status === 400) {
        await setMeta('shape', { ...SHAPE_START }); // refetch; the outbox is never touched
        continue;
      }
      if (!response.ok) {
        const floor = Number(response.headers.get('retry-after')) || 0;
        await sleep(Math.max(floor * 1000, backoff));
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
        continue;
      }
      backoff = 500;
      await this.applyShape(shape, response, Array.isArray(messages) ? messages : []);
    }
  }

  /** One shape response, with the cursor it leads to, in one local transaction. */
  async applyShape(shape, response, messages) {
    const handle = response.headers.get('electric-handle');
    const offset = response.headers.get('electric-offset');
    const cursor = response.headers.get('electric-cursor');
    let upToDate = shape.upToDate || response.headers.has('electric-up-to-date');
    let refetch = false;
    let changes = 0;
    const seen = [];
    await transact(['rows', 'meta'], 'readwrite', async (s) => {
      if (shape.offset === '-1') await s.rows.clear(); // a fresh snapshot replaces the old copy
      for (const message of messages) {
        const control = message.headers?.control;
        if (control === 'must-refetch') { refetch = true; break; }
        if (control === 'up-to-date') { upToDate = true; continue; }
        if (control) continue;
        const operation = message.headers?.operation;
        changes += 1;
        if (operation === 'delete') { await s.rows.delete(message.key); continue; }
        const existing = (await s.rows.get(message.key)) || {};
        const row = { ...existing, ...message.value };
        for (const name of [...MERGE_FIELDS, 'deleted']) if (row[`${name}_hlc`]) seen.push(row[`${name}_hlc`]);
        await s.rows.put(row, message.key);
      }
      if (refetch) {
        await s.meta.put({ ...SHAPE_START }, 'shape');
        return;
      }
      await s.meta.put({ handle: handle || shape.handle, offset: offset || shape.offset,
        cursor: cursor || shape.cursor, upToDate }, 'shape');
      if (offset && /^\d+_\d+$/.test(offset)) await s.meta.put(offset.split('_')[0], 'pulled_lsn');
      if (seen.length) {
        // Later local edits must sort after every stamp this device has seen.
        const node = await s.meta.get('client_id');
        const last = await s.meta.get('hlc_last');
        const latest = seen.reduce((a, b) => (b.slice(0, 22) > a.slice(0, 22) ? b : a), last || '');
        const p = parseStamp(latest);
        if (p && latest !== last) await s.meta.put(formatStamp({ ...p, node }), 'hlc_last');
      }
      if (upToDate) await s.meta.put(Date.now(), 'last_sync_ms');
    });
    if (changes || refetch || shape.offset === '-1') await this.refresh();
    else { this.meta.lastSyncMs = Date.now(); this.emit(); }
  }
}
