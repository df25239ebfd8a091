"""Screenshots of the PWA's main screens, for docs/pwa.md: `.venv/bin/python docs/screenshots/take.py`.

Starts a real `pulse-server` on a throwaway database (dropped at the end), gives a demo athlete four
weeks of entries and one conflict through the push endpoint, then drives Debian's Chromium (headless,
390 px wide like a phone) through sign-in, today, the log form with a refused value, history, and the
sync screen with a rejected change and one queued offline. Writes docs/screenshots/*.png.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "sync")]

from sync_support import PulseServer  # noqa: E402
from throwaway_db import migrated_database  # noqa: E402

from pulse_server.accounts import add_user  # noqa: E402
from pulse_server.db.database import Database  # noqa: E402
from pulse_server.settings import Settings  # noqa: E402

OUT = Path(__file__).resolve().parent
USERNAME = "ana"
PASSWORD = "correct horse battery"
TODAY = dt.date.today()


def stamp(ms: int, counter: int, client: str) -> str:
    return f"{ms:016d}:{counter:05d}:{client}"


def seed(url: str) -> None:
    """Four weeks of a plausible athlete (not today), and one conflict on the day before yesterday."""
    rng = random.Random(7)
    with httpx.Client(base_url=url, timeout=30) as http:
        token = http.post("/v1/auth/token", json={"username": USERNAME, "password": PASSWORD}).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        now = int(time.time() * 1000) - 60_000
        mutations: list[dict[str, Any]] = []
        for back in range(27, 0, -1):
            day = (TODAY - dt.timedelta(days=back)).isoformat()
            if rng.random() < 0.12:
                continue
            fields = {"sleep_hours": round(rng.uniform(5.5, 8.8), 2), "hrv_ms": round(rng.uniform(42, 78), 1),
                      "hrv_method": "rmssd", "steps": rng.randrange(3500, 16000),
                      "weight_kg": round(71 + rng.uniform(-0.8, 0.8), 1)}
            mutations.append({"seq": len(mutations) + 1, "date": day, "op": "set", "fields": fields,
                              "base": dict.fromkeys(["sleep_hours", "hrv_ms", "steps", "weight_kg"]),
                              "hlc": stamp(now, len(mutations), "watch")})
        batch = {"protocol": 1, "client_id": "watch", "mutations": mutations}
        http.post("/v1/sync/push", json=batch).raise_for_status()
        day = (TODAY - dt.timedelta(days=2)).isoformat()
        late = {"seq": 1, "date": day, "op": "set", "fields": {"steps": 12000}, "base": {"steps": None},
                "hlc": stamp(now + 1_000, 0, "phone")}
        http.post("/v1/sync/push", json={"protocol": 1, "client_id": "phone", "mutations": [late]}).raise_for_status()


def shot(page: Page, name: str, full_page: bool = True) -> None:
    page.wait_for_timeout(300)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full_page)
    print(f"wrote docs/screenshots/{name}.png")


def main() -> None:
    with migrated_database("pulse_shots") as database_url, tempfile.TemporaryDirectory() as tmp:
        database = Database(Settings(database_url=database_url, pool_size=1))
        with database.session() as session:
            add_user(session, USERNAME, PASSWORD, False)
        database.dispose()
        env = {"PULSE_DATABASE_URL": database_url, "PULSE_REPLICATION_READER": "true", "PULSE_SHAPE_WATCHER": "true"}
        server = PulseServer(Path(tmp) / "server.log", env)
        try:
            server.wait_ready()
            seed(server.url)
            app = f"{server.url}/app/"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
                page = context.new_page()
                page.goto(app)
                page.get_by_label("Username").fill(USERNAME)
                shot(page, "signin")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_function("document.getElementById('sync-pill').textContent.includes('synced')")

                page.goto(app + f"#log/{TODAY.isoformat()}")
                page.get_by_label("Sleep").fill("6.4")
                page.get_by_label("HRV (ms)").fill("58")
                page.get_by_label("Steps").fill("10,500")
                page.get_by_role("button", name="Save").click()
                shot(page, "log-error")
                page.get_by_label("Steps").fill("10500")
                page.get_by_label("Weight").fill("71.2")
                page.get_by_label("Note").fill("easy run, legs heavy")
                page.get_by_role("button", name="Save").click()
                page.wait_for_function("document.getElementById('sync-pill').textContent.includes('synced')")
                page.goto(app + "#today")
                shot(page, "today")
                page.goto(app + "#history")
                shot(page, "history", full_page=False)

                page.evaluate("window.pulse.engine.write(arguments[0], 'set', {steps: 250000})".replace(
                    "arguments[0]", repr((TODAY - dt.timedelta(days=1)).isoformat())))
                page.wait_for_function("document.getElementById('sync-pill').textContent.includes('rejected')")
                context.set_offline(True)
                page.goto(app + f"#log/{TODAY.isoformat()}")
                page.get_by_label("Note").fill("easy run, legs heavy; stretched after")
                page.get_by_role("button", name="Save").click()
                page.goto(app + "#sync")
                shot(page, "sync")
                browser.close()
        finally:
            server.close()


if __name__ == "__main__":
    main()
