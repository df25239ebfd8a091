// The sync engine: writes go to the outbox first; pushes go through POST /v1/sync/push in bounded
// batches; reads follow the user's shape (GET /v1/shape, the Electric protocol) into the local copy.
//
// Only these endpoints are used, with URLs relative to the app: /v1/auth/token, /v1/me, /v1/rules,
// /v1/sync/push, /v1/sync/refused (and /taken), /v1/shape, /v1/conflicts, /v1/conflicts/dismiss,
// /v1/erasures. The cloud server and `pulse agent --serve` both serve them.
//
// The rules every device follows (docs/sync.md) hold here too: one database, one client id (a push that
// shows another database uses ours moves the pending changes to a new id); the server's time is the
// reference (the clock takes in every stamp and server time it sees, "today" and stamps use the
// corrected clock, pushes carry the zone); a change merely early is held, not refused; conflicts come
// from the server by version and are judged against the local view; the days an erasure covers leave
// the database, with what the queue held of them (docs/erasure.md).
//
// Accounts (docs/pwa.md): the engine works on one account's database, the account signed in on this
// device when the tab started or signed in. Before every write and every push it checks that this is
// still the signed-in account; when another tab signs out or signs in as someone else, this tab stops
// (it is `locked`), forgets what it showed and says so. Tabs tell each other on a BroadcastChannel.

import { newClientId, nextStamp, parseStamp, formatStamp } from './hlc.js';
import { buildView, conflictState, expired, MERGE_FIELDS, unfoldedValue } from './replica.js';
import { localToday } from './values.js';
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
const FAR_OFF_MS = 3_600_000; // a clock off by more than this is worth telling the user about
const MAX_NEW_IDS = 3; // new client ids one push may take (each is random: a second clash is unlikely)
const CONFLICT_PAGE = 200;
const DISMISS_BATCH = 1_000; // the server's limit per request
const CONFLICT_KEEP_MS = 180 * 86_400_000; // the server keeps its conflict audit 180 days: so does the device
const SHAPE_START = { handle: null, offset: '-1', cursor: null, upToDate: false };
const CHANNEL = 'ngx-pulse';
// What an account keeps when it signs out with its unsynced changes kept: the queue and the identity
// that numbers it (client_id, next_seq, hlc_last, clock_offset_ms); its copy of the server goes.
// Queued dismissals stay too: they are the user's, not the server's.
const SERVER_COPY_META = ['token', 'role', 'shape', 'pulled_lsn', 'conflicts', 'conflicts_version', 'last_sync_ms',
  'erasures_after', 'erasures'];
const ERASURE_PAGE = 1_000; // the server's limit per request

/** A request that never reached the server (offline, refused, cut): not an error of the page's own. */
export class Unreachable extends Error {
  constructor(message) {
    super(message);
    this.name = 'Unreachable';
  }
}

/**
 * The server failed a request (a 5xx), or refused it for a reason that is not about this page's data
 * (a 4xx): it was reached, but the request cannot pass until something is mended.
 */
export class ServerFailed extends Error {
  constructor(what, response, body = null) {
    const code = body?.error?.code;
    const how = response.status >= 500 ? 'failed' : 'refused';
    super(`the server ${how} the ${what} (${response.status}${code ? `, ${code}` : ''})`);
    this.name = 'ServerFailed';
  }
}

/** A write or a sign-in refused because this tab's account is no longer the signed-in one. */
export class AccountChanged extends Error {
  constructor(message) {
    super(message);
    this.name = 'AccountChanged';
  }
}

const unsynced = (outbox) => outbox.filter((m) => m.status === 'pending' || m.status === 'rejected').length;

/** A pending mutation the server held: its date is still ahead of the user's today there. */
export const isHeld = (m) => m.status === 'pending' && m.result?.status === 'held';

const later = (a, b) => a.ms > b.ms || (a.ms === b.ms && a.counter > b.counter);

/** Move the clock past the newest of `stamps` (in the caller's transaction on `meta`). */
async function observe(s, stamps) {
  let newest = null;
  for (const text of stamps) {
    const stamp = parseStamp(text);
    if (stamp && (!newest || later(stamp, newest))) newest = stamp;
  }
  if (!newest) return;
  const last = parseStamp(await s.meta.get('hlc_last'));
  if (last && !later(newest, last)) return;
  await s.meta.put(formatStamp({ ...newest, node: await s.meta.get('client_id') }), 'hlc_last');
}

/**
 * The server's clock is the reference (docs/sync.md, "Clocks"): keep how far ours is off, as seen at
 * the middle of a request (under 1 s counts as none), and take the server's time in as a stamp seen.
 * In the caller's transaction on `meta`.
 */
async function learnClock(s, serverMs, sentAt, receivedAt) {
  if (!Number.isInteger(serverMs)) return; // a server that does not say its time
  const offset = serverMs - Math.round((sentAt + receivedAt) / 2);
  await s.meta.put(Math.abs(offset) > OFFSET_TOLERANCE_MS ? offset : 0, 'clock_offset_ms');
  // A clock that ran ahead left the last stamp in the future, and the clock never goes back past its
  // last stamp: bring it back to server time (the server clamped those stamps anyway).
  const last = parseStamp(await s.meta.get('hlc_last'));
  if (last && last.ms > serverMs + SKEW_LIMIT_MS) {
    await s.meta.put(formatStamp({ ms: serverMs, counter: 0, node: last.node }), 'hlc_last');
  }
  await observe(s, [formatStamp({ ms: serverMs, counter: 0, node: 'server' })]);
}

/**
 * Another database uses this client id (a copied or restored profile): take a new random one. Pending
 * mutations keep their seq, which is fresh under the new id, and their stamps, bases and fields; those
 * answered before stay recorded under the id they were sent with (their `client_id`).
 */
async function takeNewId(s, old) {
  const id = newClientId();
  await s.meta.put(id, 'client_id');
  await s.meta.put([...((await s.meta.get('former_client_ids')) || []), old], 'former_client_ids');
  return id;
}

const covers = (e, date) => (e.from === null || e.from <= date) && (e.to === null || date <= e.to);
/** sync/erasure.py: a write of `date` stamped `hlc` was made before the erasure, for a day it erased. */
const refuses = (e, date, hlc) => covers(e, date) && (parseStamp(hlc)?.ms ?? Infinity) < e.erased_at_ms;

function erasureDays(e) {
  if (e.from === null && e.to === null) return 'every day';
  if (e.from === null) return `every day up to ${e.to}`;
  if (e.to === null) return `every day from ${e.from}`;
  return e.from === e.to ? e.from : `${e.from} to ${e.to}`;
}

/**
 * A row of an erased day whose every value was stamped before the erasure: a change logged before it,
 * read by a pull that ran before the server removed it from the log. Not kept: the erasure's delete follows.
 */
function fromBeforeAnErasure(row, erasures) {
  const stamps = [...MERGE_FIELDS, 'deleted'].map((name) => row[`${name}_hlc`]).filter(Boolean);
  return erasures.some((e) => covers(e, row.date)
    && stamps.every((stamp) => (parseStamp(stamp)?.ms ?? 0) < e.erased_at_ms));
}

/**
 * Apply erasures (docs/erasure.md), in the caller's transaction on rows, outbox and meta: the days'
 * rows of the server copy go; the queue's changes of those days made before the erasure go too, except
 * that a pending one is refused (`rejected`, code `erased`, as the server answers it) and stays listed
 * until discarded; changes made after it stay; the days' conflicts go; the clock moves past the erasure.
 */
async function applyErasures(s, erasures) {
  const keys = await s.rows.getAllKeys();
  const rows = await s.rows.getAll();
  const outbox = await s.outbox.getAll();
  for (const e of erasures) {
    for (let i = 0; i < keys.length; i += 1) if (rows[i]?.date && covers(e, rows[i].date)) await s.rows.delete(keys[i]);
    const when = new Date(e.erased_at_ms).toISOString().replace(/\.\d{3}Z$/, '+00:00');
    for (const m of outbox) {
      if (!refuses(e, m.date, m.hlc)) continue;
      if (m.status === 'pending') {
        await s.outbox.put({ ...m, status: 'rejected', sent_at: Date.now(), result: { seq: m.seq, status: 'rejected',
          error: { code: 'erased', field: 'date', value: m.date, message: `date: the entries of ${erasureDays(e)}`
            + ` were erased at ${when}; this change was made before that and is not applied` } } });
      } else if (!(m.status === 'rejected' && m.result?.error?.code === 'erased')) {
        await s.outbox.delete(m.seq);
      }
    }
    const conflicts = (await s.meta.get('conflicts')) || [];
    await s.meta.put(conflicts.filter((c) => !covers(e, c.date)), 'conflicts');
  }
  const applied = (await s.meta.get('erasures')) || [];
  const known = new Set(applied.map((e) => e.id));
  await s.meta.put([...applied, ...erasures.filter((e) => !known.has(e.id))
    .map(({ id, from, to, erased_at_ms }) => ({ id, from, to, erased_at_ms }))], 'erasures');
  await observe(s, erasures.map((e) => formatStamp({ ms: e.erased_at_ms, counter: 0, node: 'erasure' })));
}

/** The conflicts held, with those fetched merged in by id (a dismissal, here or there, is for good). */
function mergeConflicts(held, fetched, nowMs) {
  const byId = new Map(held.filter((c) => Number.isInteger(c.version)).map((c) => [c.id, c]));
  for (const c of fetched) byId.set(c.id, { ...c, dismissed: Boolean(c.dismissed || byId.get(c.id)?.dismissed) });
  const since = nowMs - CONFLICT_KEEP_MS;
  return [...byId.values()].filter((c) => !(Date.parse(c.created_at) < since)).sort((a, b) => a.id - b.id);
}

/** "2 days ahead of" (the server is behind us: a negative offset), "3 hours behind". */
export function describeOffset(offsetMs) {
  const seconds = Math.floor(Math.abs(offsetMs) / 1000);
  for (const [unit, size] of [['day', 86_400], ['hour', 3_600], ['minute', 60], ['second', 1]]) {
    if (seconds >= size) {
      const count = Math.round(seconds / size);
      return `${count} ${unit}${count === 1 ? '' : 's'} ${offsetMs < 0 ? 'ahead of' : 'behind'}`;
    }
  }
  return 'in step with';
}

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

/** A successful status whose body is not the answer asked for (a captive portal's page, another service's). */
class NotAnAnswer extends Error {
  constructor(what, response) {
    const kind = (response.headers.get('content-type') || 'no content type').split(';')[0];
    super(`the answer to the ${what} was not the sync server's (${response.status}, ${kind})`);
  }
}

/**
 * Acknowledged changes past their window that the view no longer applies leave the queue (in the
 * caller's transaction on meta and outbox): at each push recorded and each pull applied.
 */
async function dropExpired(s, nowMs) {
  for (const seq of expired(await s.outbox.getAll(), await s.meta.get('pulled_lsn'), nowMs)) await s.outbox.delete(seq);
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
    this.exchanging = null;
    this.exchangeAgain = false;
    this.backoffMs = 1_000;
    this.pullError = null; // why following the shape stopped, while it is started again
    this.pullFailures = 0; // failures of the pull in a row
    this.exchangeError = null; // why the conflicts and erasures could not be brought up to date
    this.serverErrors = {}; // {push, pull}: the server's last failure of each, until it answers it again
    this.view = new Map();
    this.outbox = [];
    this.meta = {};
  }

  get online() { return navigator.onLine && this.reachable; }

  /** What the server fails to do now (pushes, pulls), for the pill and the Sync screen; null when nothing. */
  get serverError() {
    const failing = Object.values(this.serverErrors).filter(Boolean);
    return failing.length ? `Sync is held up: ${failing.join('; ')}. Trying again; your changes are kept here.` : null;
  }

  /**
   * The server's answer to a push or a pull: a failure (a 5xx) is shown until it answers that again
   * without one (a 429 is the server pacing us, retried after its Retry-After: not a failure).
   */
  noteAnswer(what, response, body = null) {
    const failed = response.status >= 500 ? new ServerFailed(what, response, body).message : null;
    if ((this.serverErrors[what] ?? null) === failed) return;
    this.serverErrors = { ...this.serverErrors, [what]: failed };
    this.emit();
  }

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
    setInterval(() => {
      if (!this.token || !navigator.onLine) return;
      this.push(); // held changes are sent again too
      this.exchangeConflicts(); // a dismissal on another device changes no entry: ask
    }, PERIODIC_MS);
    this.loadRules();
    if (this.token) this.resume();
  }

  /** Push what is queued, (re)start following the shape, exchange conflicts, check the clock. */
  resume() {
    if (!this.token || this.needsSignIn || this.locked) return;
    this.push();
    this.startPull();
    this.exchangeConflicts();
    this.checkClock();
  }

  emit() { this.dispatchEvent(new Event('change')); }

  /** Tell this account's other tabs that its data changed (they re-read it). */
  announce() { this.channel?.postMessage({ type: 'changed', db: this.store?.name }); }

  // -- the clock ---------------------------------------------------------------------------------
  /** Now, by this device's clock corrected by the server's offset. */
  now() { return Date.now() + (this.meta.clockOffsetMs || 0); }

  /** The user's calendar date now (the browser's zone, the corrected clock), "YYYY-MM-DD". */
  today() { return localToday(new Date(this.now())); }

  /** The browser's zone now, in minutes east of UTC (pushes carry it: the server counts "today" by it). */
  zoneOffsetMin() { return -new Date(this.now()).getTimezoneOffset(); }

  /** How far off this device's clock is, when that is more than an hour; else null. */
  clockNotice() {
    const offset = this.meta.clockOffsetMs || 0;
    if (Math.abs(offset) <= FAR_OFF_MS) return null;
    return `This device's clock is ${describeOffset(offset)} the server's: dates and stamps use the server's time.`;
  }

  /** Learn the clock's offset from the server's time (GET /v1/me): at sign-in and whenever sync resumes. */
  async checkClock() {
    const { store, token } = this;
    try {
      const sentAt = Date.now();
      const response = await this.request('me', { token });
      const receivedAt = Date.now();
      if (store !== this.store || !response.ok) return;
      const me = await response.json();
      await store.transact(['meta'], 'readwrite', (s) => learnClock(s, me.server_time_ms, sentAt, receivedAt));
      await this.refresh();
    } catch { /* offline: the offset learned last stays */ }
  }

  async refresh() {
    if (!this.store) {
      this.meta = { shape: SHAPE_START, lastSyncMs: null, clockOffsetMs: 0, conflicts: [], pulledLsn: '0',
        clientId: null, formerClientIds: [] };
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
        await Promise.all(['shape', 'last_sync_ms', 'clock_offset_ms', 'conflicts', 'pulled_lsn', 'client_id',
          'former_client_ids'].map((k) => s.meta.get(k))),
      ]);
    } catch (error) {
      if (store === this.store) throw error;
    }
    if (store !== this.store) return; // the account changed (or this tab stopped) while reading
    const [rows, outbox, metaPairs] = read;
    const [shape, lastSync, offset, conflicts, pulledLsn, clientId, former] = metaPairs;
    this.meta = { shape: shape || SHAPE_START, lastSyncMs: lastSync || null, clockOffsetMs: offset || 0,
      conflicts: conflicts || [], pulledLsn: pulledLsn || '0', clientId: clientId || null,
      formerClientIds: former || [] };
    this.outbox = outbox;
    this.view = buildView(this.rules, rows, outbox, this.meta.pulledLsn, Date.now());
    this.emit();
  }

  async request(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    const token = options.token ?? this.token;
    if (token && !options.anonymous) headers.Authorization = `Bearer ${token}`;
    if (options.json !== undefined) headers['Content-Type'] = 'application/json';
    try {
      return await fetch(new URL(path, API), {
        method: options.method || 'GET', headers, cache: 'no-store', signal: options.signal,
        body: options.json === undefined ? undefined : JSON.stringify(options.json),
      });
    } catch (error) {
      if (error?.name === 'AbortError') throw error;
      throw new Unreachable(`${path.split('?')[0]}: ${error?.message || error}`);
    }
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
    this.lastError = null; // what the previous account's sync said is not this one's
    this.pullError = null;
    this.pullFailures = 0;
    this.exchangeError = null;
    this.serverErrors = {};
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
    if (typeof body?.access_token !== 'string') throw new NotAnAnswer('sign-in', response);
    const token = body.access_token;
    const sentAt = Date.now();
    const me = await this.request('me', { headers: { Authorization: `Bearer ${token}` }, anonymous: true });
    const receivedAt = Date.now();
    const who = await readJson(me);
    if (!me.ok) throw new Error(who?.error?.message || 'sign-in failed');
    if (typeof who?.username !== 'string') throw new NotAnAnswer('sign-in', me);
    if (who.role !== 'athlete') throw new Error(`${who.username} is a coach account: the app logs an athlete's own days`);
    return { token, username: who.username, role: who.role, clock: [who.server_time_ms, sentAt, receivedAt],
      account: typeof who.account === 'string' ? who.account : null };
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
      // Before any tab is told of the sign-in: one following it must not open an earlier holder's data.
      if (auth.account) await this.forgetEarlierAccount(auth.username, auth.account);
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
        if (auth.account) await s.meta.put(auth.account, 'account');
        if (auth.clock) await learnClock(s, ...auth.clock);
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

  /**
   * If the database of this name holds another account's data (one removed from the server, whose name was
   * given to the person signing in as `account`), it is deleted: nothing of it may reach them, nor be
   * pushed under their token, and the server has nowhere to put it. The new account starts empty.
   */
  async forgetEarlierAccount(username, account) {
    const own = this.username === username && this.store;
    const store = own ? this.store : await openAccount(username);
    const held = await store.getMeta('account');
    if (!held || held === account) {
      if (!own) store.close();
      return;
    }
    this.stopSync();
    store.close();
    if (own) this.store = null;
    await deleteDatabase(store.name);
    await this.device.transact(['kept'], 'readwrite', (s) => s.kept.delete(username));
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

  // -- conflicts (docs/sync.md, "Conflicts on every device") ------------------------------------
  /** The conflicts held, newest first, each with its state judged from the local view now. */
  conflicts() {
    return (this.meta.conflicts || []).map((c) => ({ ...c, state: conflictState(c, this.view.get(c.date)) }))
      .sort((a, b) => b.id - a.id);
  }

  openConflicts() { return this.conflicts().filter((c) => c.state === 'open').length; }

  /** Send the dismissals made here, then fetch what was recorded or dismissed since the version held. */
  exchangeConflicts() {
    if (!this.token || this.needsSignIn || this.locked) return Promise.resolve();
    if (this.exchanging) { this.exchangeAgain = true; return this.exchanging; }
    const store = this.store;
    this.exchanging = (async () => {
      try {
        do {
          this.exchangeAgain = false;
          await this.exchangeOnce();
        } while (this.exchangeAgain && this.token && !this.locked);
        this.setExchangeError(null);
      } catch (error) {
        // Offline: the next round asks again, as the pill already says. A server failing (a 5xx), or an
        // error of the page's own (an answer it could not read, storage refusing an erasure or a
        // conflict): shown, and asked again at the next round (every 30 s, and at each sync).
        if (store === this.store && !(error instanceof Unreachable)) {
          console.warn('sync: could not bring conflicts and erasures up to date', error); // shown on the page too
          this.setExchangeError(`Could not update conflicts and erasures (${error?.message || error}): trying again.`);
        }
      } finally { this.exchanging = null; }
    })();
    return this.exchanging;
  }

  setExchangeError(text) {
    if (this.exchangeError === text) return;
    this.exchangeError = text;
    this.emit();
  }

  async exchangeOnce() {
    const { store, token } = this;
    if (!store || !token) return;
    if (!(await this.exchangeErasures(store, token))) return;
    if (!(await this.exchangeRefusals(store, token))) return;
    const queued = (await store.getMeta('conflicts_dismiss')) || [];
    for (let i = 0; i < queued.length; i += DISMISS_BATCH) {
      const ids = queued.slice(i, i + DISMISS_BATCH);
      const response = await this.request('conflicts/dismiss', { method: 'POST', token, json: { ids } });
      if (response.status === 401) return this.authExpired(await readJson(response));
      if (response.status === 429) return; // pacing us: sent at the next exchange
      const refusal = response.ok ? null : await readJson(response);
      // A 5xx, or a 4xx that is not the server's own judgement of the ids (no error code: a proxy's page):
      // kept queued and said. Sent, or refused for good by the server: not sent again, nothing stays stuck.
      if (!response.ok && (response.status >= 500 || !refusal?.error?.code)) {
        throw new ServerFailed('dismissals', response, refusal);
      }
      if (store !== this.store) return;
      await store.transact(['meta'], 'readwrite', async (s) => {
        const now = (await s.meta.get('conflicts_dismiss')) || [];
        await s.meta.put(now.filter((id) => !ids.includes(id)), 'conflicts_dismiss');
      });
    }
    let fetched = 0;
    for (;;) {
      const version = (await store.getMeta('conflicts_version')) || 0;
      const response = await this.request(`conflicts?after_version=${version}&limit=${CONFLICT_PAGE}`, { token });
      if (response.status === 401) return this.authExpired(await readJson(response));
      if (response.status === 429) break; // pacing us: the next exchange asks again
      if (!response.ok) throw new ServerFailed('conflicts', response, await readJson(response));
      const body = await response.json();
      if (!Array.isArray(body?.conflicts)) throw new NotAnAnswer('conflicts', response);
      const found = body.conflicts;
      if (!(await this.checkAccount()) || store !== this.store) return; // not this account's any more
      await store.transact(['meta'], 'readwrite', async (s) => {
        await s.meta.put(mergeConflicts((await s.meta.get('conflicts')) || [], found, Date.now()), 'conflicts');
        await s.meta.put(Number.isInteger(body.version) ? body.version : version, 'conflicts_version');
      });
      fetched += found.length;
      if (!found.length || body.version === version) break;
    }
    if (fetched || queued.length) {
      this.announce();
      await this.refresh();
    }
  }

  /**
   * Fetch the erasures after the last one applied and apply them (docs/erasure.md); false when the
   * exchange should stop here (the token refused, or the account changed).
   */
  async exchangeErasures(store, token) {
    let applied = 0;
    for (;;) {
      const after = (await store.getMeta('erasures_after')) || 0;
      const response = await this.request(`erasures?after=${after}&limit=${ERASURE_PAGE}`, { token });
      if (response.status === 401) { await this.authExpired(await readJson(response)); return false; }
      if (response.status === 429) break; // pacing us: the next exchange asks again
      // Any other refusal or failure: an erasure the server cannot hand over must never look applied.
      if (!response.ok) throw new ServerFailed('erasures', response, await readJson(response));
      const body = await response.json();
      // Never "no erasures" for an answer that is not the server's (another service's JSON)
      if (!Array.isArray(body?.erasures)) throw new NotAnAnswer('erasures', response);
      const found = body.erasures;
      if (!found.length) break;
      if (!(await this.checkAccount()) || store !== this.store) return false; // not this account's any more
      await store.transact(['rows', 'outbox', 'meta'], 'readwrite', async (s) => {
        await applyErasures(s, found);
        await s.meta.put(Math.max(...found.map((e) => e.id)), 'erasures_after');
      });
      applied += found.length;
      if (found.length < ERASURE_PAGE) break;
    }
    if (applied) {
      this.announce();
      await this.refresh();
    }
    return true;
  }

  /**
   * Changes acknowledged earlier and refused since: a device serving this app (`pulse agent --serve`)
   * answers `applied` when it takes a change, and the sync server may refuse it when the device pushes it
   * on. Asked for this database's id and each id its acknowledged changes were sent under; each one
   * refused becomes `rejected` here with its reason (listed with Fix and Discard; put back from the
   * device's copy if no longer kept here), never a value that vanishes in silence, and the device is told
   * the page holds them now (`sync/refused/taken`). The cloud server answers none (its push answer says
   * every refusal). False when the exchange should stop here.
   */
  async exchangeRefusals(store, token) {
    const current = await store.getMeta('client_id');
    const ids = [...new Set([current, ...this.outbox.filter((m) => m.status === 'done').map((m) => m.client_id)]
      .filter(Boolean))];
    let marked = 0;
    for (const clientId of ids) {
      const response = await this.request(`sync/refused?client_id=${encodeURIComponent(clientId)}`, { token });
      if (response.status === 401) { await this.authExpired(await readJson(response)); return false; }
      if (response.status === 429) return true; // pacing us: the next exchange asks again
      if (!response.ok) throw new ServerFailed('refusals', response, await readJson(response));
      const body = await readJson(response);
      if (!Array.isArray(body?.refused)) throw new NotAnAnswer('refusals', response);
      if (!body.refused.length) continue;
      if (!(await this.checkAccount()) || store !== this.store) return false; // not this account's any more
      await store.transact(['outbox'], 'readwrite', async (s) => {
        for (const { date, op, fields, base, hlc, ...result } of body.refused) {
          const stored = await s.outbox.get(result.seq);
          if (stored && stored.status === 'done' && stored.client_id === clientId) {
            await s.outbox.put({ ...stored, status: 'rejected', result });
            marked += 1;
          } else if (!stored && typeof date === 'string') { // acknowledged long ago, and no longer kept here
            await s.outbox.put({ seq: result.seq, date, op, fields: fields || {}, base: base || {}, hlc,
              status: 'rejected', result, lsn: null, created_ms: Date.now(), sent_at: Date.now(), client_id: clientId });
            marked += 1;
          } // else still pending, or already rejected here: the browser holds it already
        }
      });
      // Held here now (to fix or discard): the device drops them from its own refusals and lists them no more
      const taken = await this.request('sync/refused/taken', { method: 'POST', token,
        json: { client_id: clientId, seqs: body.refused.map((r) => r.seq) } });
      if (taken.status === 401) { await this.authExpired(await readJson(taken)); return false; }
      if (!taken.ok && taken.status !== 429) throw new ServerFailed('refusals', taken, await readJson(taken));
    }
    if (marked) {
      this.announce();
      await this.refresh();
    }
    return true;
  }

  /** Put a conflict aside: here at once, on the server (and every other device) at the next exchange. */
  async dismissConflict(id) {
    if (!(await this.checkAccount())) throw new AccountChanged('this tab stopped: another account is signed in');
    await this.store.transact(['meta'], 'readwrite', async (s) => {
      const held = (await s.meta.get('conflicts')) || [];
      await s.meta.put(held.map((c) => (c.id === id ? { ...c, dismissed: true } : c)), 'conflicts');
      const queue = (await s.meta.get('conflicts_dismiss')) || [];
      if (!queue.includes(id)) await s.meta.put([...queue, id], 'conflicts_dismiss');
    });
    this.announce();
    await this.refresh();
    this.exchangeConflicts();
  }

  /**
   * The server refused the token: sign in again. If the whole account was erased, the refusal says so
   * (`account_erased`, with the erasure) and the account's data leaves this device first; a refusal
   * that did not say (the shape's) is asked about once.
   */
  async authExpired(body = null) {
    if (this.locked) return;
    const { store, token } = this;
    this.needsSignIn = true;
    this.generation += 1;
    this.pullController?.abort();
    this.emit();
    let error = body?.error;
    if (error?.code !== 'account_erased' && store && token) {
      try {
        error = (await readJson(await this.request('erasures?after=0&limit=1', { token })))?.error;
      } catch { return; } // offline: asked again at the next refusal
    }
    if (error?.code !== 'account_erased' || !error.erasure || store !== this.store) return;
    await store.transact(['rows', 'outbox', 'meta'], 'readwrite', (s) => applyErasures(s, [error.erasure]));
    this.announce();
    await this.refresh();
  }

  // -- writes ------------------------------------------------------------------------------------
  /**
   * Queue one mutation: `fields` are the checked values to set (null clears), or op 'delete'.
   * `base` is the stamp of each replaced value in the view, the clock moves past every stamp seen.
   * `replacing`: the seq of a refused change this one fixes, dropped in the same transaction.
   */
  async write(date, op, fields = {}, replacing = null) {
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
      // The refused change this one fixes leaves in the same transaction: never the fix saved and the
      // refused change kept (or the other way round), and never "Not saved" for a fix that was
      if (replacing !== null) await s.outbox.delete(replacing);
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
        if (this.store !== store) return; // this tab stopped while pushing
        // An error of the page's own (an answer it could not read, storage refusing a write): shown,
        // and the queue, untouched, is sent again after a backoff.
        console.warn('sync: could not record a push', error); // shown on the page too
        this.syncing = false;
        this.lastError = `Could not send your changes (${error?.message || error}): trying again.`;
        this.emit();
        this.retryLater();
      } finally {
        this.pushing = null;
      }
    })();
    return this.pushing;
  }

  async pushAll() {
    let batchSize = PUSH_BATCH;
    let after = 0;
    let newIds = 0;
    for (;;) {
      // Only the signed-in account's queue, with its own token: a tab whose account changed stops here,
      // and the batch, its token and its results stay with the account checked.
      if (!(await this.checkAccount())) return;
      const { store, token } = this;
      const pending = this.outbox.filter((m) => m.status === 'pending' && m.seq > after).sort((a, b) => a.seq - b.seq);
      if (!pending.length) {
        // Nothing (left) to send: an error of an earlier push is no longer true (another tab sent the
        // queue, or it was discarded), so it does not stay on screen with nothing to clear it.
        if (!after && (this.lastError || this.serverErrors.push)) {
          this.lastError = null;
          this.serverErrors = { ...this.serverErrors, push: null };
          this.emit();
        }
        return;
      }
      const batch = pending.slice(0, batchSize);
      this.syncing = true;
      this.emit();
      const clientId = await store.getMeta('client_id');
      const sentAt = Date.now();
      let response;
      try {
        response = await this.request('sync/push', { method: 'POST', token, json: {
          protocol: PROTOCOL, client_id: clientId, utc_offset_min: this.zoneOffsetMin(),
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
      this.noteAnswer('push', response, body);
      if (response.status === 401) return this.authExpired(body);
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
      if (!Array.isArray(body?.results)) {
        // A success that is not a push answer (a captive portal's page, a redirect followed to a sign-in
        // page): taken for one, it answered nothing and still counted as a sync. The queue stays, said.
        this.lastError = `Not sent: ${new NotAnAnswer('push', response).message}; your changes are kept here and sent`
          + ' again.';
        this.emit();
        this.retryLater();
        return;
      }
      this.lastError = null;
      this.backoffMs = 1_000;
      const answered = await this.recordResults(store, clientId, batch, body, sentAt);
      this.announce();
      if (answered.conflicts) this.exchangeConflicts();
      await this.refresh();
      if (answered.newId && newIds < MAX_NEW_IDS) { // push again, now under the new id
        newIds += 1;
        after = 0;
        continue;
      }
      if (!answered.count) return; // nothing answered: try again later rather than loop
      after = batch[batch.length - 1].seq;
    }
  }

  /**
   * One push answer, in one transaction: each result on its row, the stamps and the server's time
   * taken in, and a new client id if the answer shows another database uses ours (a `clash`, or a
   * high-water mark past every seq this database ever issued: then its `duplicate` answers are the
   * other database's records, not acknowledgements). Clashed and held mutations stay pending.
   */
  async recordResults(store, clientId, batch, body, sentAt) {
    const bySeq = new Map(body.results.map((r) => [r.seq, r]));
    const receivedAt = Date.now();
    const answered = { count: 0, conflicts: 0, newId: null };
    await store.transact(['meta', 'outbox'], 'readwrite', async (s) => {
      const issued = ((await s.meta.get('next_seq')) || 1) - 1; // seqs are never reused
      const stolen = Number.isInteger(body.high_water) && body.high_water > issued;
      let clashed = 0;
      for (const m of batch) {
        const result = bySeq.get(m.seq);
        const stored = result && (await s.outbox.get(m.seq));
        if (!stored) continue; // no answer, or discarded meanwhile (in another tab)
        answered.count += 1;
        if (result.status === 'clash' || (stolen && result.status === 'duplicate')) { clashed += 1; continue; }
        if (result.status === 'held') { // early, not wrong: sent again at each sync until its day comes
          await s.outbox.put({ ...stored, result, sent_at: receivedAt });
          continue;
        }
        const status = result.status === 'duplicate' ? (result.original_status || 'applied') : result.status;
        if (status === 'conflict') answered.conflicts += 1;
        await s.outbox.put({ ...stored, status: status === 'rejected' ? 'rejected' : 'done', result,
          lsn: body.lsn, sent_at: receivedAt, client_id: clientId });
      }
      await observe(s, body.results.map((r) => r.hlc)); // the stamps the server stored
      await dropExpired(s, receivedAt);
      await learnClock(s, body.server_time_ms, sentAt, receivedAt);
      if (clashed || stolen) answered.newId = await takeNewId(s, clientId);
      await s.meta.put(receivedAt, 'last_sync_ms');
    });
    return answered;
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
      if (generation !== this.generation) return; // stopped (signed out, or this tab locked)
      this.pullFailed(generation, error);
    });
  }

  /**
   * Following the shape failed with an error of the page's own (a response it could not apply, local
   * storage that refused a write): never a silent stop. The error is shown, and the pull starts again
   * after a backoff; from the second failure in a row it starts from a fresh snapshot, which replaces
   * the local copy of the server's rows (the outbox is never touched). A successful response clears it.
   */
  pullFailed(generation, error) {
    console.warn('sync: could not apply the server\'s changes', error); // shown on the page too
    this.pullFailures += 1;
    const wait = Math.min(MAX_BACKOFF_MS, 1_000 * 2 ** (this.pullFailures - 1));
    this.pullError = `Could not apply the server's changes (${error?.message || error}): `
      + `trying again in ${Math.round(wait / 1000)} s. Your own changes are kept.`;
    this.emit();
    const store = this.store;
    setTimeout(async () => {
      if (generation !== this.generation || store !== this.store) return;
      if (this.pullFailures >= 2) {
        try { await store.setMeta('shape', { ...SHAPE_START }); } catch { /* tried again at the next failure */ }
      }
      if (generation === this.generation) this.startPull();
    }, wait);
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
        // A body that is not JSON on a success is no shape answer (below), not a server out of reach
        messages = response.ok ? await response.json().catch((error) => {
          if (error?.name === 'AbortError') throw error;
          return undefined;
        }) : await readJson(response);
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
      this.noteAnswer('pull', response, messages);
      if (response.status === 401) return this.authExpired(messages);
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
      if (!Array.isArray(messages) || !response.headers.has('electric-offset')) {
        // A success that is not a shape answer (a captive portal's page, another service's JSON): taken
        // for one, it applied nothing, still counted as a sync, and was asked again at once, again and
        // again. It is the server failing the pull, as a 5xx is: said until the server answers a pull, and
        // asked again after a backoff from where the pull stood (nothing here is wrong: no refetch).
        this.serverErrors = { ...this.serverErrors, pull: new NotAnAnswer('pull', response).message };
        this.emit();
        await sleep(backoff);
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
        continue;
      }
      backoff = 500;
      if (!(await this.checkAccount()) || generation !== this.generation) return; // not this account's any more
      await this.applyShape(store, shape, response, messages);
      if (this.pullError !== null || this.pullFailures) {
        this.pullError = null;
        this.pullFailures = 0;
        this.emit();
      }
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
    await store.transact(['rows', 'meta', 'outbox'], 'readwrite', async (s) => {
      if (shape.offset === '-1') await s.rows.clear(); // a fresh snapshot replaces the old copy
      const erased = (await s.meta.get('erasures')) || [];
      for (const message of messages) {
        const control = message.headers?.control;
        if (control === 'must-refetch') { refetch = true; break; }
        if (control === 'up-to-date') { upToDate = true; continue; }
        if (control) continue;
        const operation = message.headers?.operation;
        changes += 1;
        if (operation === 'delete') { await s.rows.delete(message.key); continue; }
        const existing = (await s.rows.get(message.key)) || {};
        const row = { ...existing, ...unfoldedValue(message.value) };
        if (fromBeforeAnErasure(row, erased)) continue;
        for (const name of [...MERGE_FIELDS, 'deleted']) if (row[`${name}_hlc`]) seen.push(row[`${name}_hlc`]);
        await s.rows.put(row, message.key);
      }
      if (refetch) {
        await s.meta.put({ ...SHAPE_START }, 'shape');
        return;
      }
      await s.meta.put({ handle: handle || shape.handle, offset: offset || shape.offset,
        cursor: cursor || shape.cursor, upToDate }, 'shape');
      if (offset && /^\d+_\d+$/.test(offset)) {
        await s.meta.put(offset.split('_')[0], 'pulled_lsn');
        await dropExpired(s, Date.now()); // the pull moved: acknowledged changes it now shows may go
      }
      await observe(s, seen); // later local edits must sort after every stamp this device has seen
      if (upToDate) await s.meta.put(Date.now(), 'last_sync_ms');
    });
    if (changes || refetch || shape.offset === '-1') {
      this.announce();
      await this.refresh();
      // Another device's write that conflicted with one of ours is recorded with it: fetch the record.
      if (changes) this.exchangeConflicts();
    }
    else { this.meta.lastSyncMs = Date.now(); this.emit(); }
  }
}
