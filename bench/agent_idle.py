"""What `pulse agent` costs while idle, and how fast it stops on SIGTERM, against a real `pulse-server`.

Run from the repo root (PostgreSQL 15 with wal_level=logical at PGHOST:PGPORT, default
127.0.0.1:5432, user postgres):

    .venv/bin/python bench/agent_idle.py            # 60 s idle window
    .venv/bin/python bench/agent_idle.py --quick    # 10 s idle window: a smoke check

What it does:
1. A throwaway database `pulse_bench_<random>` (migrated), an athlete made by `add_user`, and
   `pulse-server serve --workers 1` with the replication reader and the shape watcher on (via
   bench/sync_pending.py's helpers). A device home in a temp dir with 1,000 logged mutations
   (200 days x 5 fields), logged in and synced once with `pulse sync`, so the agent starts from a
   realistic, caught-up store.
2. `pulse --home H agent --interval 60` as a subprocess. Settled = its first round has written
   `last_sync`, and it holds a TCP connection to the server (the live long-poll) after that round.
3. For the window (60 s), once a second: CPU time (utime + stime from /proc/<pid>/stat), RSS (VmRSS
   from /proc/<pid>/status), threads and voluntary context switches (wake-ups). Printed: CPU % (mean
   over the window and the highest one-second value), RSS mean/max, wake-ups per second, the live
   long-polls and sync rounds it made in the window (from its httpx log lines), and how the machine's
   CPU was shared meanwhile (the server's idle cost included).
4. SIGTERM: the time until the process is gone, its exit code, and its last log lines.

At the end the server is stopped, the database's replication slot(s) dropped and the database dropped
WITH (FORCE), even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _server import BIN, CLOCK_TICKS, PG_BASE, Server  # noqa: E402
from sync_pending import CpuWindow, add_athlete, bench_server, make_pending, pulse, server_url, show_cpu  # noqa: E402

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
SHAPE_LINE = re.compile(r"^(\d\d:\d\d:\d\d) HTTP Request: GET \S+/v1/shape\?(\S+) \"HTTP/1.1 (\d+)")


# --- /proc -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    cpu_ticks: int  # utime + stime of the process itself (all its threads)
    rss_kb: int
    threads: int
    wakeups: int  # voluntary context switches, summed over all threads


def sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode(errors="replace")
    rest = raw[raw.rindex(")") + 2:].split()
    ticks = int(rest[11]) + int(rest[12])
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    threads = int(fields.get("Threads", "0"))
    wakeups = 0
    for task in os.scandir(f"/proc/{pid}/task"):  # per thread: the process-level line is the main thread's only
        with contextlib.suppress(OSError):
            for line in Path(task.path, "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    wakeups += int(line.split()[1])
    return Sample(time.monotonic(), ticks, rss, threads, wakeups)


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of this process to 127.0.0.1:<port> (its sockets matched by inode)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if cols[3] == "01" and remote_port == port and cols[9] in inodes:
                    found += 1
    return found


def last_sync(home: Path) -> str | None:
    conn = sqlite3.connect(f"file:{home / 'pulse.db'}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_sync'").fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def slot_lag(url: str) -> int | None:
    """WAL bytes the bench database's replication slot has not confirmed (what an idle reader re-reads)."""
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as admin:
        row = admin.execute("SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))::bigint"
                            " FROM pg_replication_slots WHERE database = %s", (url.rsplit("/", 1)[1],)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# --- the agent ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_agent(home: Path, interval: float, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`pulse --home H agent` in its own session; killed on the way out if the bench did not stop it."""
    env = {**os.environ, "PULSE_HOME": str(home)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "pulse"), "--home", str(home), "agent", "--interval", f"{interval:g}"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


def settle(proc: subprocess.Popen[bytes], home: Path, server: Server, before: str | None, log: Path,
           timeout_s: float) -> float:
    """Wait for the first round (last_sync moves) and then a held connection to the server (the live pull)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"pulse agent exited {proc.returncode}:\n{log.read_text(errors='replace')}")
        if last_sync(home) != before and connections_to(proc.pid, server.port) >= 1:
            time.sleep(2.0)  # the catch-up request is answered at once; the next one is the held live poll
            if connections_to(proc.pid, server.port) >= 1:
                return time.monotonic() - start
        time.sleep(0.2)
    raise RuntimeError(f"pulse agent did not settle in {timeout_s:.0f} s:\n{log.read_text(errors='replace')}")


def log_lines(log: Path, since: dt.datetime, until: dt.datetime) -> list[str]:
    """The agent's log lines stamped between the two times (HH:MM:SS, same day)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            at = dt.datetime.combine(since.date(), dt.time.fromisoformat(line[:8]))
            if since.replace(microsecond=0) <= at <= until:
                found.append(line)
    return found


def shape_requests(log: Path, since: dt.datetime, until: dt.datetime) -> tuple[list[str], list[str]]:
    """(live, catch-up) shape requests the agent's httpx logged between the two times (HH:MM:SS, same day)."""
    live, catch_up = [], []
    for line in log_lines(log, since, until):
        found = SHAPE_LINE.match(line)
        if found:
            (live if "live=true" in found.group(2) else catch_up).append(found.group(1))
    return live, catch_up


# --- main --------------------------------------------------------------------------------------------------------


def measure(proc: subprocess.Popen[bytes], window_s: float, server: Server, url: str) -> dict[str, Any]:
    lag_before = slot_lag(url)
    cpu = CpuWindow(url, server).start()
    samples = [sample(proc.pid)]
    held = []
    end = samples[0].at + window_s
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        if proc.poll() is not None:
            raise RuntimeError(f"pulse agent exited {proc.returncode} during the window")
        samples.append(sample(proc.pid))
        held.append(connections_to(proc.pid, server.port))
    return {"samples": samples, "held": held, "cpu": cpu.stop(), "slot_lag": (lag_before, slot_lag(url))}


def report(result: dict[str, Any], log: Path, since: dt.datetime, until: dt.datetime) -> None:
    samples: list[Sample] = result["samples"]
    first, last = samples[0], samples[-1]
    span = last.at - first.at
    cpu_s = (last.cpu_ticks - first.cpu_ticks) / CLOCK_TICKS
    per_second = [(b.cpu_ticks - a.cpu_ticks) / CLOCK_TICKS / (b.at - a.at) for a, b in itertools.pairwise(samples)]
    rss = [s.rss_kb for s in samples]
    wakeups = (last.wakeups - first.wakeups) / span
    held = result["held"]
    live, catch_up = shape_requests(log, since, until)
    print(f"  window {span:.1f} s, {len(samples)} samples (1 s apart)")
    print(f"  CPU: {cpu_s:.2f} s = {cpu_s / span:.2%} of one core on average; highest 1 s sample "
          f"{max(per_second):.1%}; samples above 5%: {sum(p > 0.05 for p in per_second)}")
    print(f"  RSS: mean {sum(rss) / len(rss) / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB, min {min(rss) / 1024:.1f}"
          f" MiB (start {first.rss_kb / 1024:.1f}, end {last.rss_kb / 1024:.1f})")
    print(f"  threads: {first.threads} -> {last.threads}; voluntary context switches (wake-ups): {wakeups:.1f}/s")
    print(f"  connection to the server held in {sum(h >= 1 for h in held)}/{len(held)} samples")
    print(f"  live long-polls answered in the window: {len(live)} at {', '.join(live) or '-'}; catch-up shape "
          f"requests (sync rounds): {len(catch_up)} at {', '.join(catch_up) or '-'}")
    lines = log_lines(log, since, until)
    scheduler = sum("Agent.watch_outbox" in line for line in lines)
    per_day_mib = sum(len(line) + 1 for line in lines) / span * 86_400 / 2**20
    print(f"  agent log: {len(lines)} lines in the window ({len(lines) / span:.1f}/s, {per_day_mib:.0f} MiB a day at"
          f" this rate), {scheduler} of them apscheduler's watch_outbox job lines")
    show_cpu(result["cpu"], indent="  ")
    before, after = result["slot_lag"]
    mib = (lambda b: "-" if b is None else f"{b / 2**20:.1f} MiB")  # noqa: E731
    print(f"  server side: the replication slot's unconfirmed WAL {mib(before)} -> {mib(after)} over the window"
          " (WAL of the whole cluster: other databases' writes count too)")


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
        took = time.monotonic() - start
        print(f"  SIGTERM -> exited after {took:.2f} s with exit code {code}")
    except subprocess.TimeoutExpired:
        print("  SIGTERM -> still running after 60 s: SIGKILL")
        proc.kill()
        proc.wait(timeout=10)
    tail = [line for line in log.read_text(errors="replace").splitlines() if "HTTP Request" not in line][-4:]
    print("  agent's last log lines (httpx request lines left out):")
    for line in tail:
        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--window", type=float, default=60.0, help="idle seconds measured (default 60)")
    parser.add_argument("--interval", type=float, default=60.0, help="the agent's --interval (default 60)")
    parser.add_argument("--mutations", type=int, default=1_000, help="logged and synced before (default 1,000)")
    parser.add_argument("--quick", action="store_true", help="a 10 s window, 100 mutations: a smoke check")
    parser.add_argument("--keep-log", action="store_true", help="print the agent's whole log at the end")
    args = parser.parse_args()
    if args.quick:
        args.window, args.mutations = min(args.window, 10.0), min(args.mutations, 100)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    work = Path(tempfile.mkdtemp(prefix="pulse-agent-bench-"))
    home, log = work / "device", work / "agent.log"
    try:
        made_s, days = make_pending(home, args.mutations)
        with bench_server() as (url, server):
            base = server_url(server)
            password = secrets.token_urlsafe(12)
            add_athlete(url, "bench-agent", password)
            pulse(home, "login", "--server", base, "--username", "bench-agent", "--password-stdin",
                  stdin=password + "\n")
            _, sync_s = pulse(home, "sync")
            print(f"agent idle: pulse-server --workers 1 on {base}, database {url.rsplit('/', 1)[1]}; device with "
                  f"{args.mutations:,} mutations over {days} days (made in {made_s:.2f} s, synced in {sync_s:.2f} s)")
            before = last_sync(home)
            time.sleep(1.1)  # last_sync has one-second resolution: the agent's first round must change it
            cmd = f"pulse --home H agent --interval {args.interval:g}"
            with running_agent(home, args.interval, log) as proc:
                settled = settle(proc, home, server, before, log, timeout_s=60)
                print(f"\n{cmd} (pid {proc.pid}): settled {settled:.1f} s after start (first round done, "
                      f"live pull open); measuring {args.window:g} s idle", flush=True)
                since = dt.datetime.now()
                result = measure(proc, args.window, server, url)
                report(result, log, since, dt.datetime.now())
                print("\nstop:")
                stop(proc, log)
            if args.keep_log:
                print("\nagent log:\n" + log.read_text(errors="replace"))
    except KeyboardInterrupt:
        print("\ninterrupted: agent and server stopped, database dropped", file=sys.stderr)
        sys.exit(130)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
