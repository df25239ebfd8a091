"""Driving the PWA in the browser tests: the target a flow runs against, signing in, logging a day."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page
from sync_support import Device, PulseServer, shifted_clock

STAMPED = ("sleep_hours", "hrv_ms", "hrv_method", "steps", "weight_kg", "note", "score", "deleted")


@dataclass
class Target:
    """Where the app runs, signed in as whom, and how to look behind it.

    A second target (e.g. `pulse agent --serve` over a device's SQLite) provides the same fields:
    - `base_url`: serves the app at `/app/` and the endpoints /v1/auth/token, /v1/me, /v1/rules,
      /v1/sync/push, /v1/shape, /v1/conflicts, /v1/conflicts/dismiss;
    - `username`, `password`: an athlete who can sign in there, with no entries yet;
    - `new_device(name)`: a CLI device (its own PULSE_HOME) logged in as that user, whose `pulse sync`
      exchanges changes with the same data the page syncs with;
    - `stored(date)`: that day's row as stored behind the API (text values, keys `STAMPED`), or None;
    - `settle()`: returns once every committed write is visible to shape readers (a no-op where
      reads and writes share one store);
    - optionally `revoke_sign_ins()`: make the server refuse every token the user holds.
    """

    name: str
    base_url: str
    username: str
    password: str
    new_device: Callable[[str], Device]
    stored: Callable[[str], dict[str, str | None] | None]
    settle: Callable[[], None]
    revoke_sign_ins: Callable[[], None] | None = None  # optional: where tokens can be revoked

    @property
    def app_url(self) -> str:
        return f"{self.base_url}/app/"


# -- driving the app -----------------------------------------------------------------------------
def sign_in(page: Page, target: Target) -> None:
    page.goto(target.app_url)
    page.get_by_label("Username").fill(target.username)
    page.get_by_label("Password").fill(target.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("heading", name="Today").wait_for()


def pill(page: Page) -> str:
    return page.locator("#sync-pill").inner_text()


def wait_pill(page: Page, text: str, timeout_ms: float = 20_000) -> None:
    page.wait_for_function("t => document.getElementById('sync-pill').textContent.includes(t)", arg=text,
                           timeout=timeout_ms)


def log_day(page: Page, date: str, *, queued: bool = True, **fields: str) -> None:
    """Open the log form for `date`, type the given fields (by their labels) and save; unless the form is
    expected to refuse them (`queued=False`), wait until the write is in the outbox, so that a sync pill
    read next describes it and not the moment before it."""
    before = page.evaluate("window.pulse.engine.outbox.length") if queued else 0
    page.goto(page.url.split("#")[0] + f"#log/{date}")
    page.get_by_label("Date").fill(date)
    labels = {"sleep_hours": "Sleep", "hrv_ms": "HRV (ms)", "steps": "Steps", "weight_kg": "Weight", "note": "Note"}
    for name, value in fields.items():
        if name == "hrv_method":
            page.get_by_label("HRV method").select_option(value)
        else:
            page.get_by_label(labels[name]).fill(value)
    page.get_by_role("button", name="Save").click()
    if queued:
        page.wait_for_function("n => window.pulse.engine.outbox.length > n", arg=before)


def outbox(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate("window.pulse.engine.outbox")
    return rows



def ready(page: Page) -> None:
    """The app has started (its local data loaded) after a load or reload."""
    page.wait_for_function("document.documentElement.dataset.ready === 'true'")


def today_values(page: Page) -> dict[str, str]:
    """The Today screen's values by their labels, and its score."""
    page.goto(page.url.split("#")[0] + "#today")
    names = page.locator("#today-values dt").all_inner_texts()
    values = page.locator("#today-values dd").all_inner_texts()
    shown = dict(zip(names, values, strict=True))
    shown["score"] = page.locator("#today-score").inner_text()
    return shown


def pump_until(page: Page, condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Like wait_for, but lets Playwright deliver events and route handlers while waiting."""
    for _ in range(int(timeout_s * 10)):
        value = condition()
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def eventually(page: Page, expression: str, timeout_s: float, what: str, arg: Any = None) -> Any:
    """Evaluate `expression` (a function of `arg`) until it returns something truthy, across the page's
    own reloads (a new version taking over reloads the page; `wait_for_function` would lose its context)."""

    def attempt() -> Any:
        try:
            return page.evaluate(expression, arg)
        except PlaywrightError:
            return None  # the page was navigating

    return pump_until(page, attempt, timeout_s, what)


def sign_out(page: Page) -> None:
    page.goto(page.url.split("#")[0] + "#sync")
    page.get_by_role("button", name="Sign out").click()


# Every IndexedDB database of the origin with every record of every store, and every cache with the
# text of every response: what a person with this browser profile could read.
_EVERYTHING_STORED = """async () => {
  const read = (db, name) => new Promise((resolve, reject) => {
    const tx = db.transaction(name);
    const keys = tx.objectStore(name).getAllKeys();
    const values = tx.objectStore(name).getAll();
    tx.oncomplete = () => resolve({ keys: keys.result, values: values.result });
    tx.onerror = () => reject(tx.error);
  });
  const databases = {};
  for (const { name } of await indexedDB.databases()) {
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open(name);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    databases[name] = {};
    for (const store of db.objectStoreNames) databases[name][store] = await read(db, store);
    db.close();
  }
  const cached = {};
  for (const name of await caches.keys()) {
    const cache = await caches.open(name);
    cached[name] = {};
    for (const request of await cache.keys()) cached[name][request.url] = await (await cache.match(request)).text();
  }
  return { databases, caches: cached };
}"""


def everything_stored(page: Page) -> dict[str, Any]:
    """{"databases": {name: {store: {"keys", "values"}}}, "caches": {name: {url: text}}}."""
    found: dict[str, Any] = page.evaluate(_EVERYTHING_STORED)
    return found


def database_names(page: Page) -> list[str]:
    names: list[str] = page.evaluate("indexedDB.databases().then((all) => all.map((d) => d.name))")
    return names


# -- a copied profile ----------------------------------------------------------------------------
_EXPORT = """async () => {
  const dump = {};
  for (const { name } of await indexedDB.databases()) {
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open(name);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    dump[name] = {};
    for (const store of db.objectStoreNames) {
      dump[name][store] = await new Promise((resolve, reject) => {
        const tx = db.transaction(store);
        const { keyPath } = tx.objectStore(store);
        const keys = tx.objectStore(store).getAllKeys();
        const values = tx.objectStore(store).getAll();
        tx.oncomplete = () => resolve({ keyPath, keys: keys.result, values: values.result });
        tx.onerror = () => reject(tx.error);
      });
    }
    db.close();
  }
  return dump;
}"""

_IMPORT = """async (dump) => {
  for (const [name, stores] of Object.entries(dump)) {
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open(name, 1);
      request.onupgradeneeded = () => {
        for (const [store, { keyPath }] of Object.entries(stores)) {
          if (!request.result.objectStoreNames.contains(store)) {
            request.result.createObjectStore(store, keyPath ? { keyPath } : undefined);
          }
        }
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    await new Promise((resolve, reject) => {
      const tx = db.transaction(Object.keys(stores), 'readwrite');
      for (const [store, { keyPath, keys, values }] of Object.entries(stores)) {
        const target = tx.objectStore(store);
        target.clear();
        values.forEach((value, i) => (keyPath ? target.put(value) : target.put(value, keys[i])));
      }
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
    db.close();
  }
}"""


def copy_profile(source: Page, target: Page) -> None:
    """Every IndexedDB database of `source`'s profile copied, record for record, into `target`'s (another
    browser context on the same origin), as copying a browser profile does; `target` is reloaded."""
    dump = source.evaluate(_EXPORT)
    target.evaluate(_IMPORT, dump)
    target.reload()
    ready(target)


# -- the server's clock --------------------------------------------------------------------------
def move_clock(server: PulseServer, at: str) -> None:
    """Start a server of `server_at` again on its port, its clock now starting at `at` (UTC)."""
    server.kill()
    server.env.update(shifted_clock(f"@{at}"))
    server.restart()
