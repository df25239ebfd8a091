"""What `pulse verify` costs for a year of data: requests, bytes and time, clean and with one day differing.

Run from the repo root (PostgreSQL 15 with wal_level=logical at PGHOST:PGPORT, default
127.0.0.1:5432, user postgres):

    .venv/bin/python bench/verify_cost.py              # an athlete's year; a coach of 10 athletes' years
    .venv/bin/python bench/verify_cost.py --quick      # 90 days; a coach of 3 athletes

What it does:
1. A throwaway database `pulse_bench_<random>` (migrated) and `pulse-server serve --workers 1` with the
   replication reader and shape watcher on. Athletes (and a coach they granted access to) made by
   `pulse_server.accounts`.
2. Each athlete's year is pushed through the server's own push endpoint (365 days ending yesterday, five
   fields a day, as a device would send them), then a device home (`pulse login`, `pulse sync`) pulls it.
3. Timed through the real CLI (`pulse verify --json`, a subprocess; median of 5): a clean verification;
   then one day's steps changed by hand in the device's `server_entries`, and `pulse verify --json`
   (finds it) and `pulse verify --repair --json` (fixes it and checks again). Requests and bytes are
   the CLI's own count (`MeteredTransport`: request and status lines, headers and bodies on the wire).
   The server's side alone: `GET /v1/checksums` for the year, median of 20.
4. The same for the coach's device, which verifies every athlete's rows.
The server is stopped and the database (and its replication slot) dropped at the end, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _server import BIN, wait_for_slot  # noqa: E402
from sync_pending import bench_server  # noqa: E402

PASSWORD = "correct horse battery"


def add_users(url: str, athletes: int, coach: bool) -> tuple[list[tuple[int, str, str]], str | None]:
    """(id, username, token) per athlete, and the coach's username (who every athlete granted)."""
    from pulse_server.accounts import add_user, grant, issue_token
    from pulse_server.db.database import Database
    from pulse_server.settings import Settings

    db = Database(Settings(database_url=url, pool_size=1))
    out = []
    try:
        with db.session() as session:
            coach_name = add_user(session, "coach", PASSWORD, True).username if coach else None
            for i in range(athletes):
                user = add_user(session, f"athlete-{i:03d}", PASSWORD, False)
                assert user.id is not None
                token, _ = issue_token(session, user, 1)
                if coach_name:
                    grant(session, user, coach_name)
                out.append((int(user.id), user.username, token))
    finally:
        db.dispose()
    return out, coach_name


def seed_year(base: str, token: str, days: int, rng: random.Random) -> None:
    import httpx

    first = dt.date.today() - dt.timedelta(days=days)
    ms = time.time_ns() // 1_000_000 - days * 86_400_000
    mutations = []
    for i in range(days):
        fields = {"sleep_hours": f"{rng.uniform(5, 9):.2f}", "hrv_ms": f"{rng.uniform(30, 90):.2f}",
                  "steps": rng.randint(2000, 16000), "weight_kg": f"{rng.uniform(68, 72):.2f}",
                  "note": rng.choice(("easy run", "rest day", "intervals", "travel", "slept badly"))}
        mutations.append({"seq": i + 1, "date": (first + dt.timedelta(days=i)).isoformat(), "op": "set",
                          "fields": fields, "base": dict.fromkeys(fields), "source": "manual",
                          "hlc": f"{ms + i * 86_400_000:016d}:00000:seeder"})
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60) as http:
        for start in range(0, len(mutations), 200):
            response = http.post("/v1/sync/push", json={"protocol": 1, "client_id": "seeder",
                                                        "mutations": mutations[start:start + 200]})
            response.raise_for_status()


def pulse(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env["PULSE_HOME"] = str(home)
    return subprocess.run([str(BIN / "pulse"), *args], capture_output=True, text=True, env=env, input=input,
                          timeout=600)


def verify(home: Path, *args: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = pulse(home, "verify", *args, "--json")
    took = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"pulse verify -> {done.returncode}: {done.stderr}")
    return took, json.loads(done.stdout)


def device(base: str, username: str, workdir: Path) -> Path:
    home = workdir / username
    for args in (("login", "--server", base, "--username", username, "--password-stdin"), ("sync",)):
        done = pulse(home, *args, input=PASSWORD + "\n")
        if done.returncode != 0:
            raise RuntimeError(f"pulse {args[0]} -> {done.returncode}: {done.stderr}")
    return home


def measure(label: str, home: Path, key: str, rows: int) -> None:
    runs = [verify(home) for _ in range(5)]
    clean = runs[0][1]
    assert clean["clean"] and clean["days_checked"] == rows, clean
    print(f"\n{label}: {rows} rows on the server, {clean['months']} months")
    print(f"  clean verify:            {clean['requests']} request, {clean['bytes_received']:,} bytes received,"
          f" {clean['bytes_sent']:,} sent; {statistics.median(t for t, _ in runs):.3f} s median of 5"
          " (pulse start-up included)")
    with sqlite3.connect(home / "pulse.db") as conn:
        day = conn.execute("SELECT date FROM server_entries WHERE user_id = ? ORDER BY date LIMIT 1 OFFSET ?",
                           (key, rows // (2 if key == "" else 20))).fetchone()[0]
        conn.execute("UPDATE server_entries SET steps = steps + 1 WHERE user_id = ? AND date = ?", (key, day))
    took, found = verify(home)
    assert [d["date"] for d in found["differences"]] == [day], found
    print(f"  one day differing:       {found['requests']} requests, {found['bytes_received']:,} bytes received;"
          f" {took:.3f} s (months, the shape caught up, that month's days)")
    took, repaired = verify(home, "--repair")
    assert repaired["clean"] and repaired["repaired"], repaired
    print(f"  ... --repair:            {repaired['requests']} requests, {repaired['bytes_received']:,} bytes"
          f" received; {took:.3f} s (as above, the day's row, the months again)")


def server_side(base: str, token: str) -> None:
    import httpx

    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60) as http:
        times = []
        for _ in range(20):
            started = time.perf_counter()
            response = http.get("/v1/checksums")
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    print(f"  GET /v1/checksums alone: {statistics.median(times) * 1000:.1f} ms median of 20,"
          f" {len(response.content):,} bytes of body")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="90 days, a coach of 3 athletes")
    args = parser.parse_args()
    days, athletes = (90, 3) if args.quick else (365, 10)
    rng = random.Random(19)
    with bench_server() as (url, server), tempfile.TemporaryDirectory(prefix="pulse-verify-") as tmp:
        base = f"http://127.0.0.1:{server.port}"
        wait_for_slot(url)
        users, coach = add_users(url, athletes, coach=True)
        for _, _, token in users:
            seed_year(base, token, days, rng)
        print(f"seeded {athletes} athletes x {days} days ({athletes * days} rows) through POST /v1/sync/push")
        time.sleep(1.0)  # the replication reader puts the last commits in the shape log
        _, name, token = users[0]
        measure(f"an athlete's device ({days} days)", device(base, name, Path(tmp)), "", days)
        server_side(base, token)
        assert coach is not None
        measure(f"a coach's device ({athletes} athletes x {days} days)", device(base, coach, Path(tmp)),
                users[-1][1], athletes * days)


if __name__ == "__main__":
    main()
