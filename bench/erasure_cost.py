"""What an erasure costs (docs/erasure.md): on the server, on an athlete's device and on a coach's device.

Run from the repo root (PostgreSQL 15 with wal_level=logical at 127.0.0.1:5432, user postgres):

    .venv/bin/python bench/erasure_cost.py             # a year per athlete, a coach of 10 athletes
    .venv/bin/python bench/erasure_cost.py --quick     # 90 days, a coach of 3 athletes

What it does:
1. A throwaway database and `pulse-server serve` (reader and watcher on), as bench/verify_cost.py; each
   athlete's days pushed through POST /v1/sync/push; an athlete's device and the coach's device synced.
2. The server: `DELETE /v1/me/entries` of one month of the first athlete (time of the request), and the
   time until the replication reader has removed the month's earlier changes from the shape log.
3. The athlete's device: `pulse sync` that applies that erasure (rows removed, VACUUM, WAL emptied),
   beside a `pulse sync` with nothing new (median of 5; each has the erasures request, GET /v1/erasures,
   whose body when nothing is new is printed); the store's size before and after.
4. The coach's device: `pulse sync` that applies a month's erasure of another athlete, its store's size.
5. The whole year of the first athlete erased, and the athlete's device's sync that applies it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _server import wait_for_slot  # noqa: E402
from sync_pending import bench_server  # noqa: E402
from verify_cost import add_users, device, pulse, seed_year  # noqa: E402


def timed_sync(home: Path) -> float:
    started = time.perf_counter()
    done = pulse(home, "sync", "--json")
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"pulse sync -> {done.returncode}: {done.stderr}")
    return took


def size_kb(home: Path) -> float:
    return sum(p.stat().st_size for p in home.glob("pulse.db*")) / 1024


def erase(base: str, token: str, **params: str) -> tuple[float, dict[str, object]]:
    import httpx

    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60) as http:
        started = time.perf_counter()
        response = http.delete("/v1/me/entries", params=params)
        took = time.perf_counter() - started
        response.raise_for_status()
        return took, response.json()


def purged_after(url: str, user_id: int, first: str, last: str) -> float:
    """Seconds until the shape log holds no change of those days but the erasure's deletes."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM shape_log WHERE user_id = %s AND date BETWEEN %s AND %s"
                           " AND operation <> 'delete'", (user_id, first, last)).fetchone()[0]:  # type: ignore[index]
            time.sleep(0.01)
    return time.perf_counter() - started


def nothing_new_body(base: str, token: str) -> int:
    import httpx

    response = httpx.get(f"{base}/v1/erasures", params={"after": 10**9}, timeout=30,
                         headers={"authorization": f"Bearer {token}"})
    return len(response.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="90 days, a coach of 3 athletes")
    args = parser.parse_args()
    days, athletes = (90, 3) if args.quick else (365, 10)
    rng = random.Random(19)
    with bench_server() as (url, server), tempfile.TemporaryDirectory(prefix="pulse-erasure-") as tmp:
        base = f"http://127.0.0.1:{server.port}"
        wait_for_slot(url)
        users, coach = add_users(url, athletes, coach=True)
        for _, _, token in users:
            seed_year(base, token, days, rng)
        print(f"seeded {athletes} athletes x {days} days ({athletes * days} rows) through POST /v1/sync/push")
        time.sleep(1.0)
        (user_id, name, token), (_, _, other_token) = users[0], users[-1]
        home = device(base, name, Path(tmp))
        assert coach is not None
        coach_home = device(base, coach, Path(tmp))
        idle = [timed_sync(home) for _ in range(5)]
        print(f"\nnothing new: pulse sync {statistics.median(idle):.3f} s median of 5 (start-up included);"
              f" GET /v1/erasures answers {nothing_new_body(base, token)} bytes of body")

        month_first = time.strftime("%Y-%m-01", time.gmtime(time.time() - days // 3 * 86400))  # within the data
        month_last = month_first[:8] + "28"
        took, done = erase(base, token, **{"from": month_first, "to": month_last})
        purged = purged_after(url, user_id, month_first, month_last)
        print(f"\nthe server: a month ({month_first} to {month_last}) erased in {took * 1000:.1f} ms"
              f" ({done['removed']}); the shape log purged {purged:.2f} s later")
        before = size_kb(home)
        print(f"the athlete's device: pulse sync applying it {timed_sync(home):.3f} s; store {before:.0f} kB ->"
              f" {size_kb(home):.0f} kB")

        erase(base, other_token, **{"from": month_first, "to": month_last})
        before = size_kb(coach_home)
        print(f"the coach's device ({athletes * days} rows): pulse sync applying another athlete's month"
              f" {timed_sync(coach_home):.3f} s; store {before:.0f} kB -> {size_kb(coach_home):.0f} kB")

        took, done = erase(base, token)
        print(f"\nthe server: the athlete's every day erased in {took * 1000:.1f} ms ({done['removed']})")
        before = size_kb(home)
        print(f"the athlete's device: pulse sync applying it {timed_sync(home):.3f} s; store {before:.0f} kB ->"
              f" {size_kb(home):.0f} kB")


if __name__ == "__main__":
    main()
