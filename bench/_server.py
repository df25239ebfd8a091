"""Helpers for benchmarks that need a real server (used by bench/push_load.py).

A throwaway Postgres database (created, migrated, dropped WITH (FORCE) even on error or Ctrl-C),
athletes with bearer tokens issued by `pulse_server.accounts.issue_token`, a `pulse-server serve`
process in its own session, and CPU accounting from /proc (utime + stime per process).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
# libpq's own variables, as the tests read them (tests/throwaway_db.py): default 127.0.0.1:5432, user postgres
PG_USER = os.environ.get("PGUSER") or "postgres"
PG_BASE = f"postgresql://{PG_USER}@{os.environ.get('PGHOST') or '127.0.0.1'}:{os.environ.get('PGPORT') or 5432}"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Let clean-up finish: a second Ctrl-C (or SIGTERM) must not leave a database or a server behind."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@contextlib.contextmanager
def throwaway_database(base: str = PG_BASE, prefix: str = "pulse_bench", migrated: bool = True) -> Iterator[str]:
    """`CREATE DATABASE <prefix>_<random>`, migrated to head (unless `migrated` is false: another server's
    database); dropped WITH (FORCE) on the way out."""
    import psycopg
    from psycopg import sql

    from pulse_server.db.migrate import migrate

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{base}/{name}"
    try:
        if migrated:
            migrate(url)
        yield url
    finally:
        with no_interrupts():
            drop_database(base, name)


def drop_database(base: str, name: str, timeout_s: float = 20.0) -> None:
    """DROP DATABASE ... WITH (FORCE), after dropping its logical slots (the shape reader's), which would
    block the drop; retried while a just-stopped server's connections and slots are still going away."""
    import psycopg
    from psycopg import sql

    deadline = time.monotonic() + timeout_s
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        while True:
            try:
                admin.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                              " WHERE database = %s AND active", (name,))
                admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                              " WHERE database = %s AND NOT active", (name,))
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                break
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    with contextlib.suppress(OSError):  # stderr may be a closed pipe by now
        print(f"dropped database {name}", file=sys.stderr)


@dataclass(frozen=True)
class Account:
    username: str
    user_id: int
    token: str


def create_athletes(url: str, count: int, prefix: str = "athlete") -> list[Account]:
    """`count` athletes with one token each, in a few statements (10,000 in about a second).

    The first goes through `add_user` (one argon2 hash) and `issue_token`; the others copy its hash by
    SQL, since 200 argon2 hashes would take longer than the benchmark, and get tokens made as
    `issue_token` makes them (`secrets.token_urlsafe(32)`, only the `hash_token` stored), inserted in
    one statement rather than one commit each.
    """
    import datetime as dt

    from sqlalchemy import text

    from pulse_server.accounts import add_user, hash_token, issue_token
    from pulse_server.db.database import Database
    from pulse_server.settings import Settings

    db = Database(Settings(database_url=url, pool_size=1))
    try:
        with db.session() as session:
            first = add_user(session, f"{prefix}-0000", secrets.token_urlsafe(12), False)
            assert first.id is not None
            first_token, expires = issue_token(session, first, 1)
            session.execute(
                text("INSERT INTO users (username, password_hash, is_coach, created_at)"
                     " SELECT :prefix || '-' || lpad(i::text, 4, '0'), :hash, false, now()"
                     " FROM generate_series(1, :n) AS i"),
                {"prefix": prefix, "hash": first.password_hash, "n": count - 1},
            )
            others = session.execute(
                text("SELECT id, username FROM users WHERE username LIKE :like AND id <> :first ORDER BY id"),
                {"like": prefix.replace("_", r"\_") + "-%", "first": first.id}).all()
            tokens = [secrets.token_urlsafe(32) for _ in others]
            session.execute(
                text("INSERT INTO tokens (user_id, token_hash, created_at, expires_at)"
                     " SELECT u, h, now(), :expires FROM unnest(CAST(:users AS int8[]), CAST(:hashes AS text[]))"
                     " AS t(u, h)"),
                {"users": [int(r[0]) for r in others], "hashes": [hash_token(t) for t in tokens],
                 "expires": expires.astimezone(dt.UTC)},
            )
            session.commit()
            accounts = [Account(first.username, first.id, first_token)]
            accounts += [Account(str(r[1]), int(r[0]), t) for r, t in zip(others, tokens, strict=True)]
        return accounts
    finally:
        db.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`pulse-server serve` in its own session (Ctrl-C reaches us, not it; we stop it ourselves).

    Another server (bench/peers.py's Kinto) subclasses it with its own `command()` and `ready_path`.
    """

    name = "pulse-server"
    ready_path = "/readyz"

    def __init__(self, url: str, workers: int, extra_env: dict[str, str] | None = None) -> None:
        self.url = url
        self.workers = workers
        self.port = free_port()
        self.env = {**os.environ, "PULSE_DATABASE_URL": url, "PULSE_LOG_LEVEL": "warning", **(extra_env or {})}
        self.log = tempfile.NamedTemporaryFile(prefix="pulse-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [str(BIN / "pulse-server"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers)]

    def start(self, timeout_s: float = 60.0) -> None:
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=2) as reply:
                    if reply.status == 200:
                        time.sleep(2.0 if self.workers > 1 else 0.0)  # the other workers finish importing
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def pids(self) -> set[int]:
        """The server process and all its descendants (uvicorn's worker processes)."""
        if self.proc is None:
            return set()
        return descendants(self.proc.pid, process_table())

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: the server and its workers only
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def running_server(url: str, workers: int, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    with started(Server(url, workers, extra_env)) as server:
        yield server


@contextlib.contextmanager
def started(server: Server) -> Iterator[Server]:
    """The server started, stopped on the way out (and its log removed), even on error or Ctrl-C."""
    try:
        server.start()
        yield server
    finally:
        with no_interrupts():
            server.stop()
            Path(server.log.name).unlink(missing_ok=True)


# --- CPU accounting from /proc ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    comm: str
    ppid: int
    ticks: int  # utime + stime. Not cutime: a long-lived child exiting would charge its whole life to the window


def process_table() -> dict[int, Proc]:
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        table[int(entry.name)] = Proc(comm, int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def descendants(root: int, table: dict[int, Proc]) -> set[int]:
    found = {root} if root in table else set()
    grew = True
    while grew:
        more = {pid for pid, p in table.items() if p.ppid in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    table: dict[int, Proc]
    machine: tuple[int, int]

    @classmethod
    def take(cls) -> CpuSnapshot:
        return cls(time.monotonic(), process_table(), machine_ticks())


def cpu_seconds(before: CpuSnapshot, after: CpuSnapshot, pids: Iterable[int]) -> float:
    """CPU seconds the given processes used between the snapshots.

    A process born in the window counts from zero; one that ended in it is missed (its time shows up
    as "rest" of the machine), which is fine for the long-lived server workers and pooled backends.
    """
    ticks = 0
    for pid in set(pids):
        now = after.table.get(pid)
        if now is None:
            continue
        then = before.table.get(pid)
        ticks += now.ticks - (then.ticks if then is not None and then.comm == now.comm else 0)
    return ticks / CLOCK_TICKS


def postgres_pids(snapshot: CpuSnapshot) -> set[int]:
    return {pid for pid, p in snapshot.table.items() if p.comm == "postgres"}


def machine_seconds(before: CpuSnapshot, after: CpuSnapshot) -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine between the snapshots."""
    busy = (after.machine[0] - before.machine[0]) / CLOCK_TICKS
    total = (after.machine[1] - before.machine[1]) / CLOCK_TICKS
    return busy, total


# -- replication (the shape benches) ----------------------------------------------------------------


def drop_slots(url: str) -> None:
    """Drop the replication slots of the bench database (slots are cluster-wide and block DROP DATABASE)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                      " WHERE database = %s AND active_pid IS NOT NULL", (name,))
        for _ in range(100):
            row = admin.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s"
                                " AND active_pid IS NOT NULL", (name,)).fetchone()
            if row is None or row[0] == 0:
                break
            time.sleep(0.1)
        admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                      (name,))


@contextlib.contextmanager
def replication_database() -> Iterator[str]:
    """A throwaway database whose replication slots are dropped before it is."""
    with throwaway_database() as url:
        try:
            yield url
        finally:
            with no_interrupts():
                drop_slots(url)


def wait_for_slot(url: str, timeout_s: float = 30.0) -> None:
    """Until the reader's slot exists and is consistent: only commits after that reach the shape log."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
                               " AND slot_name LIKE 'pulse_shapes_%' AND confirmed_flush_lsn IS NOT NULL").fetchone()
            if row is not None and row[0] > 0:
                return
            time.sleep(0.05)
    raise RuntimeError("the replication reader did not create its slot")
