"""Opening the store: the file under the home folder, WAL mode, migrations applied."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pulse_cli.store.migrations import apply_migrations
from pulse_core.errors import StoreError

DB_NAME = "pulse.db"
HOME_FILES = (DB_NAME, "credentials.")  # what a home folder holds: the store, its journals, the token


def open_store(home: Path) -> sqlite3.Connection:
    """Open (creating if needed) `home/pulse.db`, migrated to the latest schema.

    Health data: the store and its journal files are readable by their owner only (0600), in a folder
    only its owner can list (0700), whatever the umask."""
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
        apply_migrations(conn)
        ensure_client_id(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"store: {home / DB_NAME} is not a usable Pulse store: {exc}") from exc
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
    row = conn.execute("SELECT value FROM meta WHERE key = 'client_id'").fetchone()
    if row is not None:
        return str(row[0])
    client_id = os.urandom(8).hex()  # not `secrets`: it costs 4 ms of start-up for the same bytes
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('client_id', ?)", (client_id,))
    row = conn.execute("SELECT value FROM meta WHERE key = 'client_id'").fetchone()
    return str(row[0])


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
