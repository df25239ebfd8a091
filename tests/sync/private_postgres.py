"""A throwaway Postgres cluster of our own, for tests that stop and restart the database.

The main cluster (PGHOST:PGPORT, default 127.0.0.1:5432) is shared by every test (and by other
people's runs), so it is never restarted: this one lives in a temporary folder, on its own port,
with `wal_level=logical` for the replication reader. initdb refuses to run as root, so as root the
cluster belongs to the `postgres` OS user (`runuser`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql
from sync_support import free_port

BINDIR = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    return (BINDIR / "initdb").exists() and (os.geteuid() != 0 or _has_user("postgres"))


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PrivateCluster:
    """`options`: more `-c name=value` server settings (e.g. a small max_slot_wal_keep_size). With `from_primary`,
    the cluster is a streaming standby of that one (pg_basebackup -R), synchronous when the primary names it
    in synchronous_standby_names (its application_name is `name`)."""

    def __init__(self, options: str = "", from_primary: PrivateCluster | None = None, name: str = "standby1") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pulse-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres")
        if from_primary is None:
            self._run(BINDIR / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--no-sync")
        else:
            self._run(BINDIR / "pg_basebackup", "-D", str(self.data), "-h", "127.0.0.1", "-p", str(from_primary.port),
                      "-U", "postgres", "-X", "stream", "-R", "--no-sync", "--checkpoint=fast", "-d",
                      f"host=127.0.0.1 port={from_primary.port} user=postgres application_name={name}")
        self.options = (f"-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=4 -p {self.port}"
                        f" -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} -c fsync=off"
                        f" {options}").strip()

    def _run(self, *args: object) -> None:
        done = subprocess.run([*self._as, *map(str, args)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        self._run(BINDIR / "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args)

    def start(self) -> None:
        self._pg_ctl("-o", self.options, "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "-o", self.options, "restart")

    def promote(self) -> None:
        """A standby becomes a primary (a new timeline)."""
        self._pg_ctl("promote")

    def kill(self) -> None:
        """The postmaster dies at once (as a crashed host would): no shutdown checkpoint, connections cut."""
        self._pg_ctl("-m", "immediate", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
