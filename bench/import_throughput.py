"""Import throughput and memory: the readers alone, and the full import into a SQLite store.

    .venv/bin/python bench/import_throughput.py                    # Fitbit + 100k + 1M Apple records
    .venv/bin/python bench/import_throughput.py --sizes 100000     # quicker

Figures printed:
- Fitbit (tests/data/fitbit, every user, one read per user as the CLI does it): CSV rows scanned
  per second and days per second, for the reader and for reader + import_days into a fresh store.
- Apple Health exports made by bench/make_apple_health_export.py (100,000 and 1,000,000 records):
  records/s and days/s for the reader and for the full import, each size in a fresh subprocess.
- Peak memory of the full import, each size in a fresh subprocess: peak RSS (the whole process,
  interpreter included: VmHWM on Linux, else ru_maxrss) and tracemalloc's peak (Python
  allocations only, in a separate run because tracing slows the parse), with the 1M / 100k ratio.
  Targets: > 100,000 records/s; peak at 1M no more than 1.2 x the peak at 100k.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from make_apple_health_export import make_export  # noqa: E402

from pulse_cli.store.connection import open_store  # noqa: E402
from pulse_cli.store.uow import SqliteUnitOfWork  # noqa: E402
from pulse_core.importers.apple_health import read_apple_health  # noqa: E402
from pulse_core.importers.fitbit import read_fitbit  # noqa: E402
from pulse_core.usecases import DayRecord, ImportSummary, import_days  # noqa: E402

FITBIT = ROOT / "tests" / "data" / "fitbit"
TARGET_RECORDS_PER_S = 100_000
TARGET_MEMORY_RATIO = 1.2


def full_import(home: Path, records: Iterator[DayRecord], source: str) -> ImportSummary:
    conn = open_store(home)
    try:
        return import_days(SqliteUnitOfWork(conn), "", records, source, dt.date.today())
    finally:
        conn.close()


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


# --- Fitbit ---------------------------------------------------------------------------------------


def fitbit_users(folder: Path) -> list[str]:
    lines = (folder / "dailyActivity_merged.csv").read_text(encoding="utf-8").splitlines()[1:]
    return sorted({line.split(",", 1)[0] for line in lines if line.strip()})


def fitbit_rows(folder: Path) -> int:
    return sum(
        len((folder / name).read_text(encoding="utf-8").splitlines()) - 1
        for name in ("dailyActivity_merged.csv", "sleepDay_merged.csv", "weightLogInfo_merged.csv")
    )


def bench_fitbit(repeat: int, work: Path) -> None:
    users = fitbit_users(FITBIT)
    scanned = fitbit_rows(FITBIT) * len(users)

    def parse() -> int:
        return sum(sum(1 for _ in read_fitbit(FITBIT, user)) for user in users)

    parse_s, days = best_of(repeat, parse)
    homes = iter(range(10**6))

    def imported() -> int:
        total = 0
        run = next(homes)
        for user in users:  # one store per user: they all share the same 31 days
            summary = full_import(work / f"fitbit-{run}-{user}", read_fitbit(FITBIT, user), "fitbit")
            total += summary.imported
        return total

    full_s, stored = best_of(repeat, imported)
    print(f"Fitbit, {len(users)} users, one read each ({scanned:,} CSV rows scanned, {days} days):")
    print(f"  reader      {parse_s:8.3f} s  {scanned / parse_s:12,.0f} rows/s  "
          f"{days / parse_s:10,.0f} days/s")
    print(f"  full import {full_s:8.3f} s  {scanned / full_s:12,.0f} rows/s  {stored / full_s:10,.0f} days/s"
          f"  ({stored} days stored, one fresh store per user)")


# --- Apple Health, each size in fresh subprocesses ------------------------------------------------


def child(mode: str, export: Path, work: Path, repeat: int) -> dict[str, Any]:
    """Runs in a fresh interpreter: timings, or the peak memory of one full import."""
    if mode == "time":
        parse_s, records = best_of(repeat, lambda: list(read_apple_health(export)))
        homes = iter(range(10**6))
        def run() -> ImportSummary:
            return full_import(work / f"time-{next(homes)}", read_apple_health(export), "apple-health")

        full_s, summary = best_of(repeat, run)
        return {"parse_s": parse_s, "days": len(records), "full_s": full_s, "stored": summary.imported}
    if mode == "rss":
        summary = full_import(work / "rss", read_apple_health(export), "apple-health")
        return {"maxrss_kb": peak_rss_kb(), "stored": summary.imported}
    tracemalloc.start()
    summary = full_import(work / "trace", read_apple_health(export), "apple-health")
    _, peak = tracemalloc.get_traced_memory()
    return {"traced_peak": peak, "stored": summary.imported}


def peak_rss_kb() -> int:
    """This process's peak resident set. Linux's VmHWM where there is one: ru_maxrss survives
    exec, so in a child spawned by a big parent it can report the parent's size instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(mode: str, export: Path, work: Path, repeat: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, str(export), "--work", str(work),
               "--repeat", str(repeat)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_apple(sizes: list[int], repeat: int, work: Path) -> None:
    memory: dict[int, tuple[int, int]] = {}
    for size in sizes:
        export = work / f"export-{size}.xml"
        start = time.perf_counter()
        days = make_export(export, size)
        made = time.perf_counter() - start
        mb = export.stat().st_size / 1e6
        timing = run_child("time", export, work / f"t{size}", repeat if size <= 200_000 else 1)
        rss = run_child("rss", export, work / f"r{size}", 1)
        traced = run_child("trace", export, work / f"m{size}", 1)
        memory[size] = (rss["maxrss_kb"], traced["traced_peak"])
        parse_s, full_s = timing["parse_s"], timing["full_s"]
        print(f"Apple Health export, {size:,} records, {days} days, {mb:.0f} MB (generated in {made:.1f} s):")
        print(f"  reader      {parse_s:8.3f} s  {size / parse_s:12,.0f} records/s  "
              f"{timing['days'] / parse_s:10,.0f} days/s")
        print(f"  full import {full_s:8.3f} s  {size / full_s:12,.0f} records/s  "
              f"{timing['stored'] / full_s:10,.0f} days/s  ({timing['stored']} days stored)")
        print(f"  peak memory of the full import: peak RSS {rss['maxrss_kb'] / 1024:.1f} MiB, "
              f"tracemalloc peak {traced['traced_peak'] / 2**20:.2f} MiB")
        export.unlink()
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        rss_ratio = memory[large][0] / memory[small][0]
        traced_ratio = memory[large][1] / memory[small][1]
        print(f"Peak memory {large:,} / {small:,} records: peak RSS x{rss_ratio:.2f}, "
              f"tracemalloc x{traced_ratio:.2f} (target: at most x{TARGET_MEMORY_RATIO})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (1 for 1M)")
    parser.add_argument("--skip-fitbit", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "EXPORT"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, export = args.child
        print(json.dumps(child(mode, Path(export), args.work, args.repeat)))
        return 0
    print(f"Python {sys.version.split()[0]} on {sys.platform}; "
          f"targets: > {TARGET_RECORDS_PER_S:,} records/s, "
          f"peak memory ratio <= {TARGET_MEMORY_RATIO}")
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_fitbit:
            bench_fitbit(args.repeat, work)
        bench_apple(sorted(args.sizes), args.repeat, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
