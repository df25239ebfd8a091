// The sync engine: writes go to the outbox first; pushes go through POST /v1/sync/push in bounded
// batches; reads follow the user's shape (GET /v1/shape, the Electric protocol) into the local copy.
//
// Only these endpoints are used, with URLs relative to the app: /v1/auth/token, /v1/me, /v1/rules,
// /v1/sync/push, /v1/shape, /v1/conflicts. The cloud server and `pulse agent --serve` both serve them.
//
// Accounts (docs/pwa.md): the engine works on one account's database, the account signed in on this
// device when the tab started or signed in. Before every write and every push it checks that this is
// still the signed-in account; when another tab signs out or signs in as someone else, this tab stops
// (it is `locked`), forgets what it showed and says so. Tabs tell each other on a BroadcastChannel.

import { newClientId, nextStamp, parseStamp, formatStamp } from './hlc.js';
import { buildView, MERGE_FIELDS } from './replica.js';
import {
  accountDbName, deleteDatabase, keptAccounts, moveLegacyData, openAccount, openDevice, readSession, writeSession,
} from './store.js';

const API = new URL('../v1/', location.href);
const PROTOCOL = 1;
const PUSH_BATCH = 100;
const OFFSET_TOLERANCE_MS = 1_000;
const SKEW_LIMIT_MS = 60_000;
const LIVE_ABORT_MS = 45_000;
const PERIODIC_MS = 30_000;
const MAX_BACKOFF_MS = 30_000;
const SHAPE_START = { handle: null, offset: '-1', cursor: null, upToDate: false };
const CHANNEL = 'ngx-pulse';
// What an account keeps when it signs out with its unsynced changes kept: the queue and the identity
// that numbers it (client_id, next_seq, hlc_last, clock_offset_ms); its copy of the server goes.
const SERVER_COPY_META = ['token', 'role', 'shape', 'pulled_lsn', 'conflicts', 'last_sync_ms'];

/** A write or a sign-in refused because this tab's account is no longer the signed-in one. */
export class AccountChanged extends Error {
  constructor(message) {
    super(message);
    this.name = 'AccountChanged';
  }
}

const unsynced = (outbox) => outbox.filter((m) => m.status === 'pending' || m.status === 'rejected').length;

/** One at a time across tabs where the browser can (Web Locks), else one at a time in this tab. */
function exclusive(name, work) {
  return navigator.locks ? navigator.locks.request(name, work) : work();
}

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
    this.device = null; // the device's database: session, kept accounts, rules
    this.store = null; // the account's database
    this.token = null;
    this.username = null;
    this.locked = null; // {was, now}: another tab signed `was` out, or signed in as `now`
    this.channel = null;
    this.serial = Promise.resolve();
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
    this.device = await openDevice();
    await moveLegacyData(this.device);
    this.rules = (await this.device.getMeta('rules')) || null;
    const session = await readSession(this.device);
    if (session) await this.useAccount(session.username);
    await this.refresh();
    this.listen();
    addEventListener('online', () => { this.reachable = true; this.resume(); });
    addEventListener('offline', () => { this.reachable = false; this.pullController?.abort(); this.emit(); });
    setInterval(() => { if (this.token && navigator.onLine) this.push(); }, PERIODIC_MS);
    this.loadRules();
    if (this.token) this.resume();
  }

  /** Push what is queued and (re)start following the shape. */
  resume() {
    if (!this.token || this.needsSignIn || this.locked) return;
    this.push();
    this.startPull();
    this.loadConflicts();
  }

  emit() { this.dispatchEvent(new Event('change')); }

  /** Tell this account's other tabs that its data changed (they re-read it). */
  announce() { this.channel?.postMessage({ type: 'changed', db: this.store?.name }); }

  async refresh() {
    if (!this.store) {
      this.meta = { shape: SHAPE_START, lastSyncMs: null, clockOffsetMs: 0, conflicts: [], pulledLsn: '0' };
      this.outbox = [];
      this.view = new Map();
      this.emit();
      return;
    }
    const store = this.store;
    let read;
    try {
      read = await store.transact(['rows', 'outbox', 'meta'], 'readonly', async (s) => [
        await s.rows.getAll(), await s.outbox.getAll(),
        await Promise.all(['shape', 'last_sync_ms', 'clock_offset_ms', 'conflicts', 'pulled_lsn'].map((k) => s.meta.get(k))),
      ]);
    } catch (error) {
      if (store === this.store) throw error;
    }
    if (store !== this.store) return; // the account changed (or this tab stopped) while reading
    const [rows, outbox, metaPairs] = read;
    const [shape, lastSync, offset, conflicts, pulledLsn] = metaPairs;
    this.meta = { shape: shape || SHAPE_START, lastSyncMs: lastSync || null, clockOffsetMs: offset || 0,
      conflicts: conflicts || [], pulledLsn: pulledLsn || '0' };
    this.outbox = outbox;
    this.view = buildView(this.rules, rows, outbox, this.meta.pulledLsn, Date.now());
    this.emit();
  }

  async request(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    const token = options.token ?? this.token;
    if (token && !options.anonymous) headers.Authorization = `Bearer ${token}`;
    if (options.json !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(new URL(path, API), {
      method: options.method || 'GET', headers, cache: 'no-store', signal: options.signal,
      body: options.json === undefined ? undefined : JSON.stringify(options.json),
    });
    return response;
  }

  // -- account -----------------------------------------------------------------------------------
  /** Open an account's database for this tab (a new account gets its own random client id). */
  async useAccount(username) {
    const store = await openAccount(username, () => this.storeGone(store));
    await store.transact(['meta'], 'readwrite', async (s) => {
      if (!(await s.meta.get('client_id'))) await s.meta.put(newClientId(), 'client_id');
    });
    this.store = store;
    this.username = username;
    this.token = (await store.getMeta('token')) || null;
    this.needsSignIn = false;
    this.lastError = null;
  }

  /** Whatever changes the session runs one at a time in this tab. */
  serially(work) {
    const run = this.serial.then(work);
    this.serial = run.catch(() => { /* the caller has the error */ });
    return run;
  }

  listen() {
    if ('BroadcastChannel' in self) {
      this.channel = new BroadcastChannel(CHANNEL);
      this.channel.onmessage = ({ data }) => {
        if (data?.type === 'session') this.checkAccount();
        else if (data?.type === 'changed' && data.db === this.store?.name && !this.locked) this.refresh();
      };
    }
    // A message missed (or a browser without BroadcastChannel): look again when the tab is shown.
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.checkAccount();
    });
  }

  /**
   * Is this tab's account still the one signed in on the device? A tab with no account follows a
   * sign-in made in another tab, a tab of the same account picks up its new sign-in, and a tab of an
   * account signed out elsewhere, or replaced by another, stops (`locked`) and returns false.
   */
  checkAccount() {
    return this.serially(async () => {
      if (!this.device) return false;
      const now = (await readSession(this.device))?.username ?? null;
      if (this.locked) {
        if (now !== this.locked.now) { // the notice says who is signed in now
          this.locked = { ...this.locked, now };
          this.emit();
        }
        return false;
      }
      if (!this.username) {
        if (now) {
          await this.useAccount(now);
          await this.refresh();
          this.resume();
        }
        return false;
      }
      if (now !== this.username) {
        this.lock(now);
        return false;
      }
      const token = this.store ? (await this.store.getMeta('token')) || null : null;
      if (token && token !== this.token) {
        this.token = token;
        this.needsSignIn = false;
        this.lastError = null;
        this.resume();
        this.emit();
      }
      return Boolean(this.store);
    });
  }

  /** Stop: no more writes, pushes or pulls here, and nothing of the account left on the screen. */
  lock(now) {
    this.locked = { was: this.username, now };
    this.generation += 1;
    this.pullController?.abort();
    if (this.store && !this.store.closed) this.store.close();
    this.store = null;
    this.token = null;
    this.view = new Map();
    this.outbox = [];
    this.meta = { ...this.meta, conflicts: [] };
    this.emit();
  }

  /** Another tab deleted this account's database (signed out there) or opened a newer version of it. */
  storeGone(store) {
    if (this.store !== store) return;
    this.store = null;
    this.serially(async () => {
      if (this.locked) return;
      this.lock((await readSession(this.device))?.username ?? null);
    });
  }

  /** Check a username and password with the server; nothing on the device changes yet. */
  async authenticate(username, password) {
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
    return { token, username: who.username, role: who.role };
  }

  /**
   * The account signed in on this device now (in this tab or another), with how many of its changes
   * have not reached the server: signing in as someone else asks about those first.
   */
  async signedInAccount() {
    const session = await readSession(this.device);
    if (!session) return null;
    const own = session.username === this.username && this.store;
    const store = own ? this.store : await openAccount(session.username);
    try {
      return { username: session.username, unsynced: unsynced(await store.allOutbox()) };
    } finally {
      if (!own) store.close();
    }
  }

  /**
   * Sign in with what `authenticate` returned. The account signed in before, if another, is signed out
   * first: its unsynced changes stay on the device for it if `keep` (they sync with its own token when
   * it signs in again), else its database is deleted.
   */
  adopt(auth, { keep = true } = {}) {
    return this.serially(async () => {
      if (this.locked) throw new AccountChanged('this tab stopped: reload it to sign in');
      if (this.username !== auth.username) this.stopSync();
      const previous = (await readSession(this.device))?.username ?? null;
      await writeSession(this.device, auth.username);
      this.channel?.postMessage({ type: 'session' });
      if (previous && previous !== auth.username) await this.retire(previous, keep);
      if (this.username !== auth.username || !this.store) {
        if (this.store) this.store.close();
        this.store = null;
        await this.useAccount(auth.username);
      }
      await this.store.transact(['meta'], 'readwrite', async (s) => {
        await s.meta.put(auth.token, 'token');
        await s.meta.put(auth.role, 'role');
      });
      this.token = auth.token;
      this.needsSignIn = false;
      this.lastError = null;
      this.channel?.postMessage({ type: 'session' }); // the account's other tabs take the new token
      await this.loadRules();
      await this.refresh();
      this.resume();
    });
  }

  /** Sign this tab's account out of the device: its changes kept for it if `keep`, else everything. */
  signOut({ keep = false } = {}) {
    return this.serially(async () => {
      if (this.locked || !this.username) return;
      const username = this.username;
      const now = (await readSession(this.device))?.username ?? null;
      if (now !== username) { this.lock(now); return; } // already signed out, or replaced, elsewhere
      this.stopSync();
      await writeSession(this.device, null);
      this.channel?.postMessage({ type: 'session' });
      await this.retire(username, keep);
      this.store = null;
      this.token = null;
      this.username = null;
      this.needsSignIn = false;
      this.lastError = null;
      await this.refresh();
    });
  }

  stopSync() {
    this.generation += 1;
    this.pullController?.abort();
  }

  /**
   * An account leaves the device: with unsynced changes and `keep`, only those stay (with the client
   * id and clock that number them), listed on the sign-in screen; otherwise its database is deleted.
   */
  async retire(username, keep) {
    const own = username === this.username && this.store;
    const store = own ? this.store : await openAccount(username);
    const count = unsynced(await store.allOutbox());
    if (keep && count) {
      await store.transact(['meta', 'rows', 'outbox'], 'readwrite', async (s) => {
        await s.rows.clear();
        for (const m of await s.outbox.getAll()) if (m.status === 'done') await s.outbox.delete(m.seq);
        for (const key of SERVER_COPY_META) await s.meta.delete(key);
      });
      await this.device.transact(['kept'], 'readwrite', (s) => s.kept.put({ username, unsynced: count, at: Date.now() }, username));
      store.close();
      if (own) this.store = null;
      return;
    }
    store.close();
    if (own) this.store = null;
    await deleteDatabase(store.name);
    await this.device.transact(['kept'], 'readwrite', (s) => s.kept.delete(username));
  }

  /** Accounts signed out with unsynced changes kept for them on this device. */
  keptAccounts() { return keptAccounts(this.device); }

  /** Discard what was kept for an account that is signed out. */
  async discardKept(username) {
    await this.serially(async () => {
      if ((await readSession(this.device))?.username === username) return;
      await deleteDatabase(accountDbName(username));
      await this.device.transact(['kept'], 'readwrite', (s) => s.kept.delete(username));
    });
  }

  async loadRules() {
    try {
      const response = await this.request('rules', { anonymous: true });
      if (!response.ok) return;
      this.rules = await response.json();
      await this.device.setMeta('rules', this.rules);
      await this.refresh();
    } catch { /* offline: the cached rules stay */ }
  }

  async loadConflicts() {
    if (!this.token) return;
    const store = this.store;
    try {
      const response = await this.request('conflicts?limit=50');
      if (store !== this.store) return; // the account changed meanwhile
      if (response.status === 401) return this.authExpired();
      if (!response.ok) return;
      const body = await response.json();
      await store.setMeta('conflicts', body.conflicts);
      this.meta.conflicts = body.conflicts;
      this.emit();
    } catch { /* offline */ }
  }

  authExpired() {
    if (this.locked) return;
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
    if (!(await this.checkAccount())) throw new AccountChanged('this tab stopped: another account is signed in');
    const store = this.store;
    const current = this.view.get(date);
    const touched = op === 'delete' ? MERGE_FIELDS : MERGE_FIELDS.filter((f) =>
      f in fields || (f === 'hrv_ms' && 'hrv_method' in fields));
    const base = Object.fromEntries(touched.map((f) => [f, current?.stamps[f] ?? null]));
    const seen = current ? Object.values(current.stamps) : [];
    const wire = {};
    for (const [name, value] of Object.entries(fields)) {
      wire[name] = value === null || name === 'note' || name === 'hrv_method' ? value : Number(value);
    }
    await store.transact(['meta', 'outbox'], 'readwrite', async (s) => {
      const node = await s.meta.get('client_id');
      const seq = (await s.meta.get('next_seq')) || 1;
      const offset = (await s.meta.get('clock_offset_ms')) || 0;
      const hlc = nextStamp(node, await s.meta.get('hlc_last'), Date.now(), offset, seen);
      await s.meta.put(seq + 1, 'next_seq');
      await s.meta.put(hlc, 'hlc_last');
      await s.outbox.put({ seq, date, op, fields: op === 'delete' ? {} : wire, base, hlc, status: 'pending',
        result: null, lsn: null, created_ms: Date.now() });
    });
    this.announce();
    await this.refresh();
    this.push();
  }

  async discard(seq) {
    if (!(await this.checkAccount())) throw new AccountChanged('this tab stopped: another account is signed in');
    await this.store.transact(['outbox'], 'readwrite', (s) => s.outbox.delete(seq));
    this.announce();
    await this.refresh();
  }

  // -- push --------------------------------------------------------------------------------------
  push() {
    if (!this.token || this.needsSignIn || this.locked) return Promise.resolve();
    if (this.pushing) { this.pushAgain = true; return this.pushing; }
    const store = this.store;
    this.pushing = (async () => {
      try {
        // One tab of an account pushes at a time, from the queue as stored (another tab may have
        // pushed or discarded some of it).
        await exclusive(`${store.name} push`, async () => {
          do {
            this.pushAgain = false;
            await this.refresh();
            await this.pushAll();
          } while (this.pushAgain && this.store === store);
        });
      } catch (error) {
        if (this.store === store) throw error; // else: this tab stopped while pushing
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
      // Only the signed-in account's queue, with its own token: a tab whose account changed stops here,
      // and the batch, its token and its results stay with the account checked.
      if (!(await this.checkAccount())) return;
      const { store, token } = this;
      const pending = this.outbox.filter((m) => m.status === 'pending' && m.seq > after).sort((a, b) => a.seq - b.seq);
      if (!pending.length) return;
      const batch = pending.slice(0, batchSize);
      this.syncing = true;
      this.emit();
      const sentAt = Date.now();
      let response;
      try {
        response = await this.request('sync/push', { method: 'POST', token, json: {
          protocol: PROTOCOL, client_id: await store.getMeta('client_id'),
          mutations: batch.map(({ seq, date, op, fields, base, hlc }) => ({ seq, date, op, fields, base, hlc })),
        } });
      } catch {
        this.syncing = false;
        this.reachable = false;
        this.emit();
        this.retryLater();
        return;
      }
      if (store !== this.store) return; // signed out or switched meanwhile: it is pushed again later
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
      const answered = await this.recordResults(store, batch, body, sentAt);
      this.announce();
      if (answered.conflicts) this.loadConflicts();
      await this.refresh();
      if (!answered.count) return; // nothing answered: try again later rather than loop
      after = batch[batch.length - 1].seq;
    }
  }

  async recordResults(store, batch, body, sentAt) {
    const bySeq = new Map((body.results || []).map((r) => [r.seq, r]));
    const receivedAt = Date.now();
    let count = 0;
    let conflicts = 0;
    await store.transact(['meta', 'outbox'], 'readwrite', async (s) => {
      for (const m of batch) {
        const result = bySeq.get(m.seq);
        if (!result || !(await s.outbox.get(m.seq))) continue; // discarded meanwhile (in another tab)
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
    const generation = this.generation;
    this.pullLoop(generation, this.store).catch((error) => {
      if (generation === this.generation) throw error; // else: stopped (signed out, or this tab locked)
    });
  }

  async pullLoop(generation, store) {
    const token = this.token;
    let backoff = 500;
    while (generation === this.generation && this.token && !this.needsSignIn) {
      if (!navigator.onLine) return; // the `online` event starts a new loop
      const shape = (await store.getMeta('shape')) || SHAPE_START;
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
        response = await this.request(`shape?${params}`, { signal: controller.signal, token });
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
        await store.setMeta('shape', { ...SHAPE_START }); // refetch; the outbox is never touched
        continue;
      }
      if (!response.ok) {
        const floor = Number(response.headers.get('retry-after')) || 0;
        await sleep(Math.max(floor * 1000, backoff));
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
        continue;
      }
      backoff = 500;
      if (!(await this.checkAccount()) || generation !== this.generation) return; // not this account's any more
      await this.applyShape(store, shape, response, Array.isArray(messages) ? messages : []);
    }
  }

  /** One shape response, with the cursor it leads to, in one local transaction. */
  async applyShape(store, shape, response, messages) {
    const handle = response.headers.get('electric-handle');
    const offset = response.headers.get('electric-offset');
    const cursor = response.headers.get('electric-cursor');
    let upToDate = shape.upToDate || response.headers.has('electric-up-to-date');
    let refetch = false;
    let changes = 0;
    const seen = [];
    await store.transact(['rows', 'meta'], 'readwrite', async (s) => {
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
    if (changes || refetch || shape.offset === '-1') {
      this.announce();
      await this.refresh();
    }
    else { this.meta.lastSyncMs = Date.now(); this.emit(); }
  }
}
