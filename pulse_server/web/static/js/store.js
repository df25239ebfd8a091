// The device's storage: IndexedDB, one database per account and one for the device (docs/pwa.md,
// "Accounts and tabs"). Nothing of an account is ever stored outside its own database, so no code path
// can read one account's rows or queue while another is signed in.
//
// The device database, `ngx-pulse <api>` (<api> is the absolute URL of the API the app talks to):
//   session  'current' -> {username, at}: the account signed in on this device (absent: signed out)
//   kept     username -> {username, unsynced, at}: accounts signed out with changes kept for them
//   meta     'rules' -> the server's rules document (the same for every account); 'legacy_moved' ->
//            true once the single database of earlier versions was moved (moveLegacyData)
// An account's database, `ngx-pulse <api> account <username>`:
//   meta     client_id, next_seq, hlc_last, clock_offset_ms, token, role, shape cursor {handle, offset,
//            cursor, upToDate}, pulled_lsn, last_sync_ms, conflicts
//   rows     the server's copy: the shape's rows by their key, values as Postgres text
//   outbox   mutations by seq: {seq, date, op, fields, base, hlc, status, result, lsn, sent_at}
// Every change of several things happens in one transaction (a shape response and its cursor; a
// write's outbox row and the clock).

const API_BASE = new URL('../v1/', location.href).href;
export const DEVICE_DB = `ngx-pulse ${API_BASE}`;
export const accountDbName = (username) => `ngx-pulse ${API_BASE} account ${username}`;
// Before accounts had databases of their own, everything lived in one database of this name.
export const LEGACY_DB = 'ngx-pulse';
const VERSION = 1;

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function open(name, stores) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      for (const [store, options] of Object.entries(stores)) {
        if (!db.objectStoreNames.contains(store)) db.createObjectStore(store, options);
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** An open database: transactions, and shortcuts for one read or write. */
export class Store {
  constructor(db) {
    this.db = db;
    this.name = db.name;
    this.closed = false;
  }

  /**
   * Run `work(stores)` in one transaction; resolves with its result once the transaction commits.
   * `stores.meta.get(key)` etc. return promises of requests inside the same transaction.
   */
  async transact(names, mode, work) {
    const tx = this.db.transaction(names, mode);
    const wrapped = {};
    for (const name of names) {
      const store = tx.objectStore(name);
      wrapped[name] = {
        get: (key) => done(store.get(key)),
        getAll: () => done(store.getAll()),
        getAllKeys: () => done(store.getAllKeys()),
        put: (value, key) => done(key === undefined ? store.put(value) : store.put(value, key)),
        delete: (key) => done(store.delete(key)),
        clear: () => done(store.clear()),
      };
    }
    const committed = new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
    });
    let result;
    try {
      result = await work(wrapped);
    } catch (error) {
      try { tx.abort(); } catch { /* already finished */ }
      committed.catch(() => { /* the abort is the answer to the error above */ });
      throw error;
    }
    await committed;
    return result;
  }

  getMeta(key) { return this.transact(['meta'], 'readonly', (s) => s.meta.get(key)); }
  setMeta(key, value) { return this.transact(['meta'], 'readwrite', (s) => s.meta.put(value, key)); }
  allRows() { return this.transact(['rows'], 'readonly', (s) => s.rows.getAll()); }
  allOutbox() { return this.transact(['outbox'], 'readonly', (s) => s.outbox.getAll()); }

  close() {
    this.closed = true;
    this.db.close();
  }
}

export async function openDevice() {
  return new Store(await open(DEVICE_DB, { session: undefined, kept: undefined, meta: undefined }));
}

/**
 * An account's database. `onGone` runs when another tab deletes it (a sign-out there) or opens it with
 * a newer schema: the connection is closed at once so that the other tab is not kept waiting.
 */
export async function openAccount(username, onGone = null) {
  const db = await open(accountDbName(username), { meta: undefined, rows: undefined, outbox: { keyPath: 'seq' } });
  const store = new Store(db);
  db.onversionchange = () => {
    store.close();
    onGone?.();
  };
  return store;
}

/** Delete a database; resolves once it is gone (other tabs close theirs when told, see openAccount). */
export function deleteDatabase(name) {
  return done(indexedDB.deleteDatabase(name));
}

// -- the device's session ------------------------------------------------------------------------
export async function readSession(device) {
  return (await device.transact(['session'], 'readonly', (s) => s.session.get('current'))) || null;
}

export function writeSession(device, username) {
  return device.transact(['session', 'kept'], 'readwrite', async (s) => {
    if (username === null) {
      await s.session.delete('current');
    } else {
      await s.session.put({ username, at: Date.now() }, 'current');
      await s.kept.delete(username); // signed in: what was kept for this account is its own queue again
    }
  });
}

export const keptAccounts = (device) => device.transact(['kept'], 'readonly', (s) => s.kept.getAll());

// -- the single database of earlier versions -----------------------------------------------------
/** Open a database only if it exists (an open that would create it is aborted). */
function openExisting(name) {
  return new Promise((resolve) => {
    const request = indexedDB.open(name);
    request.onupgradeneeded = () => request.transaction.abort();
    request.onsuccess = () => resolve(request.result);
    request.onerror = (event) => { event.preventDefault(); resolve(null); };
  });
}

async function readAll(store, name) {
  return store.transact([name], 'readonly', async (s) => {
    const keys = await s[name].getAllKeys();
    const values = await s[name].getAll();
    return keys.map((key, i) => [key, values[i]]);
  });
}

/**
 * Move the one database of earlier versions into the signed-in account's own database (its client id,
 * clock, copy and queue, pending changes included), once. The old database is emptied in the same
 * step (a tab of the old version still open cannot number new changes with the moved client id) and
 * then deleted; the delete completes when such a tab closes, so it is not waited for.
 */
export async function moveLegacyData(device) {
  if (await device.getMeta('legacy_moved')) return;
  const db = await openExisting(LEGACY_DB);
  const names = ['meta', 'rows', 'outbox'];
  if (db && names.every((name) => db.objectStoreNames.contains(name))) {
    const legacy = new Store(db);
    const [meta, rows, outbox] = await Promise.all(names.map((name) => readAll(legacy, name)));
    const values = new Map(meta);
    const username = values.get('username');
    if (values.get('rules')) await device.setMeta('rules', values.get('rules'));
    if (username) {
      const account = await openAccount(username);
      await account.transact(names, 'readwrite', async (s) => {
        if (await s.meta.get('client_id')) return;
        for (const [key, value] of meta) if (key !== 'rules' && key !== 'username') await s.meta.put(value, key);
        for (const [key, value] of rows) await s.rows.put(value, key);
        for (const [, value] of outbox) await s.outbox.put(value);
      });
      account.close();
      if (!(await readSession(device))) await writeSession(device, username);
    }
    await legacy.transact(names, 'readwrite', async (s) => { for (const name of names) await s[name].clear(); });
  }
  db?.close();
  await device.setMeta('legacy_moved', true);
  if (db) indexedDB.deleteDatabase(LEGACY_DB);
}
