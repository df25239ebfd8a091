// The device's storage: one IndexedDB database with three stores.
//   meta    key -> value: client_id, next_seq, hlc_last, clock_offset_ms, token, username, rules,
//           shape cursor {handle, offset, cursor}, last_sync_ms, conflicts
//   rows    the server's copy: the shape's rows by their key, values as Postgres text
//   outbox  mutations by seq: {seq, date, op, fields, base, hlc, status, result, lsn, sent_at}
// Every change of several things happens in one transaction (a shape response and its cursor; a
// write's outbox row and the clock).

const NAME = 'ngx-pulse';
const VERSION = 1;
export const STORES = ['meta', 'rows', 'outbox'];

let opening = null;

export function openDb() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open(NAME, VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        if (!db.objectStoreNames.contains('meta')) db.createObjectStore('meta');
        if (!db.objectStoreNames.contains('rows')) db.createObjectStore('rows');
        if (!db.objectStoreNames.contains('outbox')) db.createObjectStore('outbox', { keyPath: 'seq' });
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opening;
}

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * Run `work(stores)` in one transaction; resolves with its result once the transaction commits.
 * `stores.meta.get(key)` etc. return promises of requests inside the same transaction.
 */
export async function transact(names, mode, work) {
  const db = await openDb();
  const tx = db.transaction(names, mode);
  const wrapped = {};
  for (const name of names) {
    const store = tx.objectStore(name);
    wrapped[name] = {
      get: (key) => done(store.get(key)),
      getAll: () => done(store.getAll()),
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
    throw error;
  }
  await committed;
  return result;
}

export const getMeta = (key) => transact(['meta'], 'readonly', (s) => s.meta.get(key));
export const setMeta = (key, value) => transact(['meta'], 'readwrite', (s) => s.meta.put(value, key));
export const allRows = () => transact(['rows'], 'readonly', (s) => s.rows.getAll());
export const allOutbox = () => transact(['outbox'], 'readonly', (s) => s.outbox.getAll());
