// An athlete's entries as a TanStack DB collection synced by @tanstack/electric-db-collection from
// pulse-server's /v1/shape, written through POST /v1/sync/push and settled by transaction id, as an app
// would (docs/shapes.md, "Writes a client can await"); reports everything as JSON lines.
//
//   SHAPE_TOKEN=<bearer token> node tanstack_collection.mjs --url http://127.0.0.1:8000 [--label name]
//
// Each stdout line is a JSON object with `t` (wall-clock ms, as Python's time.time() * 1000) and `event`:
//   ready      the collection's first sync is done
//   rows       the collection's rows (by date) whenever they change
//   filtered   the rows of a live query over the collection (steps > 5000), whenever they change
//   optimistic a write's rows right after the collection was told (before the server answered)
//   pushed     the push's answer to a write (its txid)
//   settled    a write's transaction is persisted: the shape carried its txid (or `failed`)
// Commands on stdin, one JSON object a line: {"cmd": "insert", "id", "row"},
// {"cmd": "update", "id", "date", "changes"}, {"cmd": "delete", "id", "date"}. The process ends when
// its stdin closes.

import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'

import { createCollection, createLiveQueryCollection, gt } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'

const { values: args } = parseArgs({
  options: { url: { type: 'string' }, label: { type: 'string', default: 'tanstack' } },
})
const base = args.url
const token = process.env.SHAPE_TOKEN
const now = () => performance.timeOrigin + performance.now()
const emit = (event, fields) =>
  process.stdout.write(
    JSON.stringify({ t: now(), label: args.label, event, ...fields }, (_k, v) =>
      typeof v === 'bigint' ? v.toString() : v
    ) + '\n'
  )

// The push protocol (docs/sync.md): this app is one client, with its own id, seqs and stamps.
const clientId = `tanstack-${randomUUID().slice(0, 8)}`
let seq = 0
let lastMs = 0
let counter = 0
const stamp = () => {
  const ms = Date.now()
  counter = ms > lastMs ? 0 : counter + 1
  lastMs = Math.max(ms, lastMs)
  return `${String(lastMs).padStart(16, '0')}:${String(counter).padStart(5, '0')}:${clientId}`
}
const VALUE_FIELDS = ['sleep_hours', 'hrv_ms', 'hrv_method', 'steps', 'weight_kg', 'note']
const STAMPED = { hrv_method: 'hrv_ms' } // hrv_method travels with hrv_ms's stamp

const push = async (mutations) => {
  const response = await fetch(`${base}/v1/sync/push`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ protocol: 1, client_id: clientId, mutations }),
  })
  const body = await response.json()
  if (!response.ok) throw new Error(`push: ${response.status} ${JSON.stringify(body)}`)
  const refused = body.results.filter((r) => !['applied', 'conflict', 'duplicate'].includes(r.status))
  if (refused.length) throw new Error(`push refused: ${JSON.stringify(refused)}`)
  emit('pushed', { txid: body.txid, results: body.results })
  // The shape's txids are numbers, the push's txid a decimal string: awaitTxId takes a number. A push
  // that changed nothing has no txid: nothing to wait for.
  return body.txid === null ? {} : { txid: Number(body.txid) }
}

const fieldsOf = (row) => Object.fromEntries(VALUE_FIELDS.filter((f) => f in row).map((f) => [f, row[f]]))
const baseOf = (original, fields) =>
  Object.fromEntries(Object.keys(fields).map((f) => [f, original?.[`${STAMPED[f] ?? f}_hlc`] ?? null]))

const entries = createCollection(
  electricCollectionOptions({
    id: `entries-${args.label}`,
    shapeOptions: {
      url: `${base}/v1/shape`,
      // A deleted day is a tombstone row (deleted = true): the filter turns its delete into a move out
      // of the shape (a `delete` message), and bringing the day back into a move in (an `insert`).
      // The columns it shows and, to base its edits on, the stamp of each field (by name: the default
      // columns carry them folded into `stamps`, docs/shapes.md "Stamps").
      params: { table: 'entries', where: 'deleted = false',
                columns: ['user_id', 'date', ...VALUE_FIELDS, 'deleted',
                          ...VALUE_FIELDS.filter((f) => !STAMPED[f]).map((f) => `${f}_hlc`)].join(',') },
      headers: { Authorization: `Bearer ${token}` },
    },
    getKey: (row) => row.date,
    onInsert: async ({ transaction }) =>
      push(transaction.mutations.map((m) => {
        const fields = fieldsOf(m.modified)
        return { seq: ++seq, date: m.modified.date, op: 'set', fields, base: baseOf(null, fields), hlc: stamp(),
                 source: 'manual' }
      })),
    onUpdate: async ({ transaction }) =>
      push(transaction.mutations.map((m) => {
        const fields = fieldsOf(m.changes)
        return { seq: ++seq, date: m.original.date, op: 'set', fields, base: baseOf(m.original, fields),
                 hlc: stamp(), source: 'manual' }
      })),
    onDelete: async ({ transaction }) =>
      push(transaction.mutations.map((m) => ({
        seq: ++seq, date: m.original.date, op: 'delete', fields: {}, base: {}, hlc: stamp(), source: 'manual',
      }))),
  })
)

const byDate = (rows) => [...rows].sort((a, b) => (a.date < b.date ? -1 : 1))
const shown = (row) => ({ date: row.date, steps: row.steps ?? null, note: row.note ?? null, deleted: row.deleted })
const report = () => emit('rows', { rows: byDate(entries.toArray).map(shown) })

const filtered = createLiveQueryCollection({
  query: (q) =>
    q.from({ e: entries })
      .where(({ e }) => gt(e.steps, 5000))
      .select(({ e }) => ({ date: e.date, steps: e.steps })),
})

entries.subscribeChanges(report)
const filteredRows = () => byDate(filtered.toArray).map(({ date, steps }) => ({ date, steps }))
filtered.subscribeChanges(() => emit('filtered', { rows: filteredRows() }))
await entries.preload()
await filtered.preload()
emit('ready', { client_id: clientId })
report()
emit('filtered', { rows: filteredRows() })

const write = (command) => {
  let transaction
  if (command.cmd === 'insert') {
    transaction = entries.insert({ deleted: false, ...command.row })
  } else if (command.cmd === 'update') {
    transaction = entries.update(command.date, (draft) => Object.assign(draft, command.changes))
  } else if (command.cmd === 'delete') {
    transaction = entries.delete(command.date)
  } else {
    return
  }
  emit('optimistic', { id: command.id, rows: byDate(entries.toArray).map(shown) })
  transaction.isPersisted.promise.then(
    () => emit('settled', { id: command.id, rows: byDate(entries.toArray).map(shown) }),
    (error) => emit('failed', { id: command.id, message: String(error?.message ?? error) })
  )
}

let pending = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  pending += chunk
  let newline
  while ((newline = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, newline).trim()
    pending = pending.slice(newline + 1)
    if (line) write(JSON.parse(line))
  }
})
process.stdin.on('end', () => process.exit(0))
