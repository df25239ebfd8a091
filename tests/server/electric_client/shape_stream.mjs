// Follow one shape of pulse-server with ElectricSQL's own client and report everything as JSON lines.
//
//   SHAPE_TOKEN=<bearer token> node shape_stream.mjs --url http://127.0.0.1:8000/v1/shape \
//       [--table entries] [--where "steps > $1" --param 10000 ...] [--columns user_id,date,steps]
//       [--handle H --offset O] [--live-sse] [--label name]
//       [--log changes_only] [--replica full] [--subset-method POST]
//
// (the token may also be given as --token, but the environment keeps it out of `ps`).
//
// Every line on stdout is one JSON object with `t` (wall-clock ms since the epoch, fractional, the
// same clock as Python's time.time() * 1000) and `event`:
//   start     the client's version and the options used
//   http      one response the client's fetch received: the query parameters it sent, status,
//             electric-* and cache headers, the body of a non-2xx answer
//   messages  one batch the ShapeStream delivered to subscribers (parsed values), and the stream's
//             handle/offset/isUpToDate after it
//   rows      the Shape's materialised rows whenever it notifies (on up-to-date with changes)
//   warning   what the client wrote with console.warn (stale handles, retry loops, ignored responses)
//   error     an error the stream gave up on (then the process exits with status 3)
//   stopped   after a {"cmd": "stop"} command
//   snapshot  the answer to a {"cmd": "requestSnapshot" | "fetchSnapshot", "id", "params", "method"?}
//             command: its id, metadata and data (or the error it threw)
// Commands on stdin (below) restart or stop the stream; the process ends when its stdin is closed
// (so a test that dies does not leave it behind).

import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'

import { Shape, ShapeStream } from '@electric-sql/client'

const here = new URL('.', import.meta.url)
const clientVersion = JSON.parse(
  readFileSync(new URL('node_modules/@electric-sql/client/package.json', here), 'utf8')
).version

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    table: { type: 'string', default: 'entries' },
    where: { type: 'string' },
    param: { type: 'string', multiple: true },
    columns: { type: 'string' },
    'live-sse': { type: 'boolean', default: false },
    handle: { type: 'string' },
    offset: { type: 'string' },
    label: { type: 'string', default: 'stream' },
    log: { type: 'string' },
    replica: { type: 'string' },
    'subset-method': { type: 'string' },
  },
})

const now = () => performance.timeOrigin + performance.now()

// BigInt (int8 columns) is not JSON: write it as its decimal string.
const emit = (event, fields) => {
  const line = JSON.stringify({ t: now(), label: args.label, event, ...fields }, (_key, value) =>
    typeof value === 'bigint' ? value.toString() : value
  )
  process.stdout.write(line + '\n')
}

const url = args.url ?? process.env.SHAPE_URL
const token = args.token ?? process.env.SHAPE_TOKEN
if (!url || !token) {
  process.stderr.write('usage: SHAPE_TOKEN=... node shape_stream.mjs --url http://host:port/v1/shape\n')
  process.exit(2)
}

// The client reports protocol trouble (stale handles, fast retry loops, ignored responses) only
// through console.warn: report those as events too.
const warn = console.warn.bind(console)
console.warn = (...parts) => {
  emit('warning', { message: parts.map((p) => (p instanceof Error ? p.message : String(p))).join(' ') })
  warn(...parts)
}

const SHOWN_HEADERS = /^(electric-|cache-control$|etag$|vary$|content-type$|content-encoding$|retry-after$|access-control-expose-headers$)/

// The client's base fetch, observed: what it asked for and what it got back.
const observedFetch = async (input, init) => {
  const requested = new URL(input.toString())
  const started = now()
  const headers = new Headers(init?.headers ?? {})
  try {
    const response = await fetch(input, init)
    const shown = {}
    for (const [name, value] of response.headers) {
      if (SHOWN_HEADERS.test(name)) shown[name] = value
    }
    const body = response.ok ? undefined : await response.clone().text()
    emit('http', {
      path: requested.pathname,
      params: Object.fromEntries(requested.searchParams),
      authorization: headers.has('authorization'),
      status: response.status,
      headers: shown,
      body,
      ms: now() - started,
    })
    return response
  } catch (error) {
    emit('http', {
      path: requested.pathname,
      params: Object.fromEntries(requested.searchParams),
      status: null,
      error: String(error?.name ?? 'Error') + ': ' + String(error?.message ?? error),
      ms: now() - started,
    })
    throw error
  }
}

const describe = (error) => ({
  name: error?.name,
  message: String(error?.message ?? error),
  status: error?.status,
  missing_headers: /didn't include the following required headers/.test(String(error?.message)),
})

let failed = false
const fail = (error) => {
  if (failed) return
  failed = true
  emit('error', describe(error))
  setTimeout(() => process.exit(3), 50)
}

// What the shape is: Electric's `params` option (the client quotes the columns and sends the where
// clause's positional parameters as params[1], params[2], ...).
const shapeParams = { table: args.table }
if (args.where) shapeParams.where = args.where
if (args.param) shapeParams.params = args.param
if (args.columns) shapeParams.columns = args.columns.split(',')
if (args.replica) shapeParams.replica = args.replica

// One ShapeStream (and its Shape) at a time; `restart` replaces it inside this process, as a page
// reload would in a browser: the client's module-level caches (expired handles, up-to-date cursors)
// survive, exactly as they survive a reload through localStorage.
let current = null

const follow = ({ handle, offset, reason }) => {
  const aborter = new AbortController()
  const options = {
    url,
    params: shapeParams,
    headers: { Authorization: `Bearer ${token}` },
    fetchClient: observedFetch,
    signal: aborter.signal,
    liveSse: args['live-sse'],
    ...(args.log ? { log: args.log } : {}),
    ...(args['subset-method'] ? { subsetMethod: args['subset-method'] } : {}),
    // Errors the client does not retry by itself (4xx but 409/429, missing headers) end the run.
    onError: (error) => {
      fail(error)
    },
  }
  if (handle) options.handle = handle
  if (offset) options.offset = offset
  emit('start', {
    client: '@electric-sql/client',
    version: clientVersion,
    node: process.version,
    url,
    params: shapeParams,
    handle: handle ?? null,
    offset: offset ?? null,
    reason,
  })

  const stream = new ShapeStream(options)
  // Subscribed before the Shape, so a batch is reported before the rows it produces.
  stream.subscribe(
    (messages) => {
      if (aborter.signal.aborted) return
      emit('messages', {
        messages,
        handle: stream.shapeHandle ?? null,
        offset: stream.lastOffset,
        up_to_date: stream.isUpToDate,
      })
    },
    (error) => fail(error)
  )
  const shape = new Shape(stream)
  shape.subscribe(({ rows }) => {
    if (aborter.signal.aborted) return
    const types = {}
    for (const [column, value] of Object.entries(rows[0] ?? {})) {
      types[column] = value === null ? 'null' : typeof value
    }
    emit('rows', { rows, types, handle: stream.shapeHandle ?? null, offset: stream.lastOffset })
  })
  return { aborter, stream, shape }
}

const stop = () => {
  if (current === null) return
  current.shape.unsubscribeAll()
  current.stream.unsubscribeAll()
  current.aborter.abort()
  current = null
}

current = follow({ handle: args.handle, offset: args.offset, reason: 'initial' })

// A subset snapshot as an app asks for one: Shape.requestSnapshot (changes_only mode: the rows are
// injected into the stream, seen as a `messages` event, and kept by the Shape), or
// ShapeStream.fetchSnapshot (the rows returned, the stream untouched); `method` 'GET' or 'POST'.
const snapshot = async ({ cmd, id, params, method }) => {
  try {
    const options = { ...params, ...(method ? { method } : {}) }
    if (cmd === 'requestSnapshot') {
      await current.shape.requestSnapshot(options)
      emit('snapshot', { id, cmd, rows: current.shape.currentRows })
    } else {
      const { metadata, data } = await current.stream.fetchSnapshot(options)
      emit('snapshot', { id, cmd, metadata, data })
    }
  } catch (error) {
    emit('snapshot', { id, cmd, error: describe(error) })
  }
}

// Commands, one JSON object a line on stdin: {"cmd": "restart", "handle"?: ..., "offset"?: ...}
// starts a new stream (fresh, or resuming from a handle and offset); {"cmd": "stop"} ends the stream.
let pending = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  pending += chunk
  let newline
  while ((newline = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, newline).trim()
    pending = pending.slice(newline + 1)
    if (!line) continue
    const command = JSON.parse(line)
    if (command.cmd === 'restart') {
      stop()
      current = follow({ handle: command.handle, offset: command.offset, reason: 'restart' })
    } else if (command.cmd === 'stop') {
      stop()
      emit('stopped', {})
    } else if (command.cmd === 'requestSnapshot' || command.cmd === 'fetchSnapshot') {
      snapshot(command)
    }
  }
})
process.stdin.on('end', () => process.exit(0))
