// One catch-up of a shape with ElectricSQL's own TypeScript client (@electric-sql/client, installed
// in tests/server/electric_client by the test command or by bench/shape_catchup.py --client electric).
//
//   SHAPE_TOKEN=<bearer token> [SHAPE_ENCODING=identity] node bench/electric_catchup.mjs <base url> [columns]
//
// (Node's fetch asks for gzip, so the server compresses; SHAPE_ENCODING=identity asks it not to.)
// Prints one JSON line: seconds from creating the ShapeStream to the Shape's rows at its first
// up-to-date (the connection is opened before the clock starts), the rows, and the requests it made.

import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'

const require = createRequire(new URL('../tests/server/electric_client/package.json', import.meta.url))
const { Shape, ShapeStream } = await import(pathToFileURL(require.resolve('@electric-sql/client')).href)

const [base, columns] = process.argv.slice(2)
const headers = {
  Authorization: `Bearer ${process.env.SHAPE_TOKEN}`,
  ...(process.env.SHAPE_ENCODING ? { 'Accept-Encoding': process.env.SHAPE_ENCODING } : {}),
}
await (await fetch(`${base}/healthz`)).text() // a running client's connection is already open

const requests = []
const timedFetch = async (input, init) => {
  const sent = performance.now()
  const response = await fetch(input, init)
  requests.push({
    offset: new URL(String(input)).searchParams.get('offset'),
    headers_ms: performance.now() - sent,
    encoding: response.headers.get('content-encoding'),
  })
  return response
}

const started = performance.now()
const stream = new ShapeStream({
  url: `${base}/v1/shape`,
  params: { table: 'entries', ...(columns ? { columns: columns.split(',') } : {}) },
  headers,
  fetchClient: timedFetch,
})
const rows = await new Shape(stream).rows
const seconds = (performance.now() - started) / 1000
stream.unsubscribeAll()
process.stdout.write(JSON.stringify({ seconds, rows: rows.length, requests }) + '\n')
process.exit(0)
