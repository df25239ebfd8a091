// Hybrid logical clock stamps, fixed-width so that comparing the strings compares the clocks:
// `<ms since epoch, 16 digits>:<counter, 5 digits>:<client_id>` (docs/push-protocol.md).

const MAX_COUNTER = 99_999;
const STAMP = /^(\d{16}):(\d{5}):([A-Za-z0-9_-]{1,64})$/;

export function parseStamp(text) {
  const m = STAMP.exec(text || '');
  return m ? { ms: Number(m[1]), counter: Number(m[2]), node: m[3] } : null;
}

export function formatStamp({ ms, counter, node }) {
  return `${String(ms).padStart(16, '0')}:${String(counter).padStart(5, '0')}:${node}`;
}

/** A random client id per install: 16 url-safe characters. */
export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * The next stamp after `last` (a stamp string or null) and after every stamp in `seen`, close to
 * the wall clock corrected by the server's offset.
 */
export function nextStamp(node, last, wallMs, offsetMs, seen = []) {
  let floor = { ms: 0, counter: 0 };
  for (const text of [last, ...seen]) {
    const s = parseStamp(text);
    if (s && (s.ms > floor.ms || (s.ms === floor.ms && s.counter > floor.counter))) floor = s;
  }
  const now = wallMs + offsetMs;
  if (now > floor.ms) return formatStamp({ ms: now, counter: 0, node });
  if (floor.counter < MAX_COUNTER) return formatStamp({ ms: floor.ms, counter: floor.counter + 1, node });
  return formatStamp({ ms: floor.ms + 1, counter: 0, node });
}
