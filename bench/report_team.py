"""A team report of 100 athletes x 365 days, in every format, timed. Targets: CSV/JSON/MD under 2 s, PDF under 30 s.

Run from the repo root:

    .venv/bin/python bench/report_team.py                     # 100 athletes x 365 days
    .venv/bin/python bench/report_team.py --athletes 20 --days 90

What it does:
1. A device home in a temp dir, its store opened (and migrated) by `pulse_cli.store.connection.open_store`,
   gets the entries directly, as a coach's replica holds them after `pulse sync`: every row in the
   server copy (`server_entries`) and the local view (`entries`), keyed by the athlete's username,
   with per-field stamps and sources. The values are made up (seeded, so every run is the same): about
   88% of days logged, sleep 4-10 h, RMSSD HRV, steps, weight on about one day in four, the score
   computed by pulse_core.
2. For each format, `pulse --home H report --team --from F --to T --format X -o FILE` as a subprocess,
   the real CLI: the wall time (the median of --runs runs, after a warm-up), with `pulse --help` as the
   start-up baseline. Then, in this process, the same report split into gathering the figures
   (`build_report`: the store read plus pulse_core.reports) and rendering the format.
3. Printed: a table of the figures against the targets, and the file sizes (the PDF's page count too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulse_cli.reports_render.formats import render  # noqa: E402
from pulse_cli.reports_render.model import athlete_calendars, build_report, roster  # noqa: E402
from pulse_cli.store.connection import open_store, write_meta  # noqa: E402
from pulse_cli.store.entries import SqliteEntryRepository  # noqa: E402
from pulse_core.entry import Entry  # noqa: E402
from pulse_core.score import rescore  # noqa: E402

PULSE = Path(sys.executable).parent / "pulse"
TARGETS_S = {"csv": 2.0, "json": 2.0, "md": 2.0, "html": None, "pdf": 30.0}
END = dt.date(2026, 6, 30)
PAGE = re.compile(rb"/Type\s*/Page[^s]")


def make_team(home: Path, athletes: int, days: int) -> int:
    """Write the replica a coach's device would hold; returns the number of entries."""
    rng = random.Random(20260630)
    conn = open_store(home)
    start = END - dt.timedelta(days=days - 1)
    count = 0
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        write_meta(conn, "account_username", "coach")
        server = SqliteEntryRepository(conn, "server_entries")
        local = SqliteEntryRepository(conn, "entries")
        for a in range(athletes):
            name = f"athlete-{a:03d}"
            sleep_mean, steps_mean, hrv_mean = rng.uniform(5.5, 8.5), rng.uniform(4000, 14000), rng.uniform(35, 90)
            weight = Decimal(str(round(rng.uniform(50, 100), 1)))
            for d in range(days):
                if rng.random() < 0.12:
                    continue  # a day not logged
                day = start + dt.timedelta(days=d)
                stamp = f"{(1_750_000_000_000 + d * 86_400_000):016d}:00000:seed-bench"
                entry = Entry(user=name, date=day)
                entry.sleep_hours = Decimal(str(round(max(0.0, rng.gauss(sleep_mean, 1.0)), 2)))
                entry.steps = max(0, int(rng.gauss(steps_mean, 2500)))
                if rng.random() < 0.9:
                    entry.hrv_ms, entry.hrv_method = Decimal(str(round(max(5.0, rng.gauss(hrv_mean, 9)), 2))), "rmssd"
                if rng.random() < 0.25:
                    weight += Decimal(str(round(rng.gauss(0, 0.4), 1)))
                    entry.weight_kg = weight
                for field in ("sleep_hours", "hrv_ms", "steps", "weight_kg"):
                    if entry.value(field) is not None:
                        entry.stamps[field], entry.sources[field] = stamp, "sync"
                rescore(entry)
                server.save(entry)
                local.save(entry)
                count += 1
    conn.close()
    return count


def run_cli(home: Path, fmt: str, out: Path, start: dt.date, runs: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    cmd = [str(PULSE), "--home", str(home), "report", "--team", "--from", start.isoformat(), "--to", END.isoformat(),
           "--format", fmt, "-o", str(out)]
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm-up
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def startup(home: Path, runs: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    samples = []
    for _ in range(runs + 1):
        began = time.perf_counter()
        subprocess.run([str(PULSE), "--home", str(home), "--help"], env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--athletes", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    start = END - dt.timedelta(days=args.days - 1)
    with tempfile.TemporaryDirectory(prefix="pulse-report-bench-") as tmp:
        home = Path(tmp) / "coach"
        began = time.perf_counter()
        entries = make_team(home, args.athletes, args.days)
        print(f"team: {args.athletes} athletes x {args.days} days ({start} to {END}): {entries:,} entries"
              f" written in {time.perf_counter() - began:.1f} s")
        print(f"`pulse --help` start-up (baseline): {startup(home, args.runs) * 1000:.0f} ms\n")
        conn = open_store(home)
        keys = roster(conn)
        calendars = athlete_calendars(conn, keys, dt.datetime.now(dt.UTC), dt.date.today())  # END is past: as asked
        print(f"{'format':<6} {'CLI wall s':>10} {'target s':>9} {'':>4} {'figures s':>10} {'render s':>9}"
              f" {'size':>10}")
        failed = []
        for fmt in ("csv", "json", "md", "html", "pdf"):
            out = Path(tmp) / f"team.{fmt}"
            wall = run_cli(home, fmt, out, start, args.runs)
            began = time.perf_counter()
            report = build_report(conn, keys, calendars, start, END, True, "bench")
            figures = time.perf_counter() - began
            began = time.perf_counter()
            content = render(report, fmt)
            rendered = time.perf_counter() - began
            target = TARGETS_S[fmt]
            verdict = "" if target is None else "ok" if wall < target else "SLOW"
            if verdict == "SLOW":
                failed.append(fmt)
            size = out.stat().st_size
            extra = ""
            if fmt == "pdf":
                assert isinstance(content, bytes)
                extra = f" ({len(PAGE.findall(content))} pages)"
            print(f"{fmt:<6} {wall:>10.2f} {'-' if target is None else f'{target:.0f}':>9} {verdict:>4}"
                  f" {figures:>10.2f} {rendered:>9.2f} {size / 1e6:>8.2f} MB{extra}")
        conn.close()
    if failed:
        print(f"\nover target: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
