// The service worker: the app shell from a versioned cache (cache first), the API always from the
// network. The server writes the content hash of every served file into VERSION each time it serves this
// file, so any changed file makes a new worker, which caches the new shell and waits until the page
// applies it (docs/pwa.md, "Updates"). No cache here ever holds an API answer: those belong to an account.

const VERSION = '__SHELL_VERSION__';
const CACHE = `ngx-pulse-shell-${VERSION}`;
const SHELL = [
  './', 'index.html', 'app.css', 'manifest.webmanifest',
  'icons/icon.svg', 'icons/icon-192.png', 'icons/icon-512.png',
  'js/app.js', 'js/sync.js', 'js/store.js', 'js/replica.js', 'js/hlc.js', 'js/values.js', 'js/score.js',
  'js/updates.js', 'js/format.js', 'js/history.js',
];

self.addEventListener('install', (event) => {
  // No skipWaiting here: a page running the old shell must not start loading the new one. The first
  // install has nothing to wait for and takes over at once.
  event.waitUntil((async () => {
    // Where the browser can (Chromium's static routing), the API goes to the network without waking
    // this worker: an open page's long polls and pushes would otherwise keep it busy, and a busy old
    // worker keeps a new version waiting (Chromium's limit: 5 minutes).
    if (event.addRoutes) {
      const api = new URL('../v1/', self.registration.scope).pathname;
      await event.addRoutes([{ condition: { urlPattern: { pathname: `${api}*` } }, source: 'network' }]);
    }
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL.map((path) => new Request(path, { cache: 'reload' })));
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('ngx-pulse-shell-') && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('message', (event) => {
  if (event.data?.type === 'skip-waiting') event.waitUntil(self.skipWaiting());
  else if (event.data?.type === 'version') event.ports[0]?.postMessage(VERSION);
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  // The API (/v1/*) and anything outside the app's folder go to the network, untouched.
  if (request.method !== 'GET' || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  if (request.mode === 'navigate') {
    event.respondWith((async () => (await caches.match('index.html', { cacheName: CACHE, ignoreVary: true })) || fetch(request))());
    return;
  }
  event.respondWith((async () => {
    // ignoreVary: the server's CORS layer adds `Vary: Origin` to every response, and module scripts are
    // requested with an Origin header that the install-time requests did not carry.
    const hit = await caches.match(request, { cacheName: CACHE, ignoreSearch: true, ignoreVary: true });
    return hit || fetch(request);
  })());
});
