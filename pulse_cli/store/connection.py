"""Opening the store: the file under the home folder, WAL mode, migrations applied."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from pulse_cli.store import meta
from pulse_cli.store.migrations import MIGRATIONS, apply_migrations
from pulse_core.errors import StoreError

DB_NAME = "pulse.db"
HOME_FILES = (DB_NAME, "credentials.")  # what a home folder holds: the store, its journals, the token


def open_store(home: Path) -> sqlite3.Connection:
    """Open (creating if needed) `home/pulse.db`, migrated to the latest schema.

    Health data: the store and its journal files are readable by their owner only (0600), in a folder
    only its owner can list (0700), whatever the umask. A store that cannot be written (a read-only folder
    or file: a read-only mount, a backup) is opened for reading only (`open_read_only`)."""
    path = home / DB_NAME
    if path.is_file() and not (os.access(home, os.W_OK) and os.access(path, os.W_OK)):
        return open_read_only(home)
    previous = os.umask(0o077)  # the database, its -wal and -shm files are created 0600
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if all(p.name.startswith(HOME_FILES) for p in home.iterdir()):  # a folder of the store's own
            _owner_only(home, 0o700)
        conn = sqlite3.connect(home / DB_NAME, isolation_level=None, timeout=10.0)
        for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
            _owner_only(home / name, 0o600)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"store: cannot open {home / DB_NAME}: {exc}") from exc
    finally:
        os.umask(previous)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros, not left in free space (the default of some builds only):
        # an erased day's values must leave the file, not just the tables (docs/erasure.md).
        conn.execute("PRAGMA secure_delete=ON")
        apply_migrations(conn)
        ensure_client_id(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"store: {home / DB_NAME} is not a usable Pulse store: {exc}") from exc
    return conn


class ReadOnlyStore(sqlite3.Connection):
    """A store opened for reading only: reads work; a write fails with one line that names the folder."""

    home: Path

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            if _is_write_refused(exc):
                raise self._read_only() from exc
            raise

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.OperationalError as exc:
            if _is_write_refused(exc):
                raise self._read_only() from exc
            raise

    def _read_only(self) -> StoreError:
        return StoreError(f"store: {self.home} is read-only: this command changes the store; reading commands"
                          " (history, show, export ...) work, or make the folder writable")


def _is_write_refused(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "readonly" in text or "read-only" in text


def open_read_only(home: Path) -> sqlite3.Connection:
    """`home/pulse.db` for reading only, if it is already at the latest schema (migrating would write).

    Nothing can write the file while its folder is read-only, so it is opened immutable: no locks and no
    -shm file to create. Unless a -wal file holds changes not yet checkpointed into it (a process stopped
    before closing): then SQLite's read-only mode, which reads them through the -shm file."""
    path = home / DB_NAME
    wal = home / f"{DB_NAME}-wal"
    pending = wal.is_file() and wal.stat().st_size > 0
    uri = path.resolve().as_uri() + ("?mode=ro" if pending else "?mode=ro&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0, factory=ReadOnlyStore)
    except sqlite3.Error as exc:
        raise StoreError(f"store: cannot read {path} (its folder {home} is read-only): {exc}") from exc
    assert isinstance(conn, ReadOnlyStore)
    conn.home = home
    try:
        conn.execute("PRAGMA query_only=ON")
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    except (sqlite3.DatabaseError, StoreError) as exc:
        conn.close()
        raise StoreError(f"store: {path} is not a usable Pulse store: {exc}") from exc
    if any(name not in done for name, _ in MIGRATIONS):
        conn.close()
        raise StoreError(f"store: {path} was made by an older pulse and needs upgrading, but {home} is read-only:"
                         " make the folder writable once")
    return conn


def _owner_only(path: Path, mode: int) -> None:
    """Take group and other access away from a path of ours (a store made before, or a folder made by
    hand), leaving a path that is not ours alone."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return
    if stat.st_uid == os.getuid() and stat.st_mode & 0o077:
        path.chmod(mode)


def ensure_client_id(conn: sqlite3.Connection) -> str:
    """The install's random id: it names this device's mutations and breaks HLC ties."""
    return meta_once(conn, meta.CLIENT_ID)


def meta_once(conn: sqlite3.Connection, key: str) -> str:
    """A random id kept under `key`, made the first time it is asked for (by whichever process asks
    first: a second one's INSERT is ignored, and both read the same)."""
    found = read_meta(conn, key)
    if found is not None:
        return found
    # not `secrets`: it costs 4 ms of start-up for the same bytes
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, os.urandom(8).hex()))
    made = read_meta(conn, key)
    assert made is not None
    return made


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def resolve_home(option: str | None, environ: dict[str, str] | None = None) -> Path:
    """`--home`, then `PULSE_HOME`, then `$XDG_DATA_HOME/pulse` (default ~/.local/share/pulse)."""
    env = os.environ if environ is None else environ
    if option:
        return Path(option).expanduser()
    if env.get("PULSE_HOME"):
        return Path(env["PULSE_HOME"]).expanduser()
    data_home = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "pulse"
