// New versions of the app (docs/pwa.md, "Updates"). The service worker is registered with
// `updateViaCache: 'none'` (the browser asks the server for sw.js itself, never its HTTP cache) and
// checked at start, every 15 minutes, when the page is shown again and when the network returns. The
// server writes the content hash of every served file into sw.js, so any changed file makes a new worker.
// A new worker caches the new shell beside the old one and waits; the page decides when it takes over
// (`apply`: the worker skips waiting, every page it controls reloads). Until then everything the page
// loads comes from the old shell, so old and new modules are never mixed.

const CHECK_MS = 15 * 60_000;
const UPDATED = 'ngx-pulse-updated'; // sessionStorage: this load is the first of a new version

/** Whether this page load was a new version taking over (asked once per load). */
export function justUpdated() {
  const updated = sessionStorage.getItem(UPDATED) === 'true';
  sessionStorage.removeItem(UPDATED);
  return updated;
}

function reload() {
  sessionStorage.setItem(UPDATED, 'true');
  location.reload();
}

export class Updates extends EventTarget {
  constructor() {
    super();
    this.registration = null;
    this.ready = false; // a new version is installed (or already running in another tab) and not shown here
    this.applying = false;
    this.version = null; // the shell version this page runs, as its service worker reports it
  }

  async start() {
    if (!('serviceWorker' in navigator)) return;
    const workers = navigator.serviceWorker;
    const controlledAtStart = Boolean(workers.controller);
    workers.addEventListener('controllerchange', () => {
      if (this.applying) { reload(); return; }
      // Another tab applied a new version: this page still runs the old one.
      if (controlledAtStart) this.found();
      else this.askVersion(); // the first install took this page over
    });
    try {
      this.registration = await workers.register('sw.js', { updateViaCache: 'none' });
    } catch {
      return; // no service worker (e.g. not a secure context): the app still works online
    }
    const registration = this.registration;
    const track = (worker) => worker?.addEventListener('statechange', () => {
      // The first install (no controller yet) takes over by itself; only a replacement waits.
      if (worker.state === 'installed' && workers.controller) this.found();
    });
    // The browser checks for a new worker on every navigation, so one may be installing already.
    track(registration.installing);
    registration.addEventListener('updatefound', () => track(registration.installing));
    if (registration.waiting && workers.controller) this.found();
    this.check();
    setInterval(() => this.check(), CHECK_MS);
    document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') this.check(); });
    addEventListener('online', () => this.check());
    this.askVersion();
  }

  /** Ask the server whether sw.js changed; a changed one installs in the background. */
  check() {
    this.registration?.update().catch(() => { /* offline or the server is away: the next check will do */ });
  }

  found() {
    if (this.ready) return;
    this.ready = true;
    this.dispatchEvent(new Event('ready'));
  }

  /** Run the new version now: the waiting worker takes over and the page reloads (controllerchange). */
  async apply() {
    if (this.applying) return;
    this.applying = true;
    const waiting = this.registration?.waiting;
    if (!waiting) { reload(); return; } // already running (applied by another tab)
    this.dispatchEvent(new Event('ready'));
    // Wake the old worker first: Chromium swaps a waiting worker in as soon as the old one, if running,
    // goes idle; an old worker that was stopped when skipWaiting came kept the new one waiting for up to
    // 5 minutes (half the runs of the update tests did, before this).
    await this.askVersion();
    waiting.postMessage({ type: 'skip-waiting' });
  }

  /** Ask the controlling worker for its version (this also wakes it if the browser had stopped it). */
  askVersion() {
    const controller = navigator.serviceWorker.controller;
    if (!controller) return Promise.resolve();
    return new Promise((resolve) => {
      const channel = new MessageChannel();
      channel.port1.onmessage = ({ data }) => {
        this.version = data;
        this.dispatchEvent(new Event('version'));
        resolve();
      };
      controller.postMessage({ type: 'version' }, [channel.port2]);
    });
  }
}
