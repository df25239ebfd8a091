"""The device's SQLite store behind `pulse agent --serve`: the port the device app is built over.

Sign-in is the device user's own: the password is checked with the sync server when it answers (and
remembered as a salted scrypt hash, so the next sign-in works offline); tokens the device issues are
stored as SHA-256 hashes. Pushed mutations go through `relay`; the shape comes from `shape_log`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulse_cli.agent.account import Account, load_account, save_account
from pulse_cli.agent.relay import hand_back, high_water, refused_since, relay_batch
from pulse_cli.agent.upstream import Upstream
from pulse_cli.store import meta
from pulse_cli.store.connection import DB_NAME, meta_once, read_meta, write_meta
from pulse_cli.store.entries import COLUMNS
from pulse_cli.store.uow import SqliteUnitOfWork, wall_ms

if TYPE_CHECKING:  # the server package is imported only when `pulse agent --serve` runs
    from pulse_server.device.ports import LogChange, Pushed, Row, Signed

TOKEN_TTL = dt.timedelta(days=30)
DECIMALS = ("sleep_hours", "hrv_ms", "weight_kg")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
# Asks the sync server whether a password is right: True, False, or None when it cannot be asked.
UpstreamCheck = Callable[[Account, str, str], bool | None]


class SqliteDeviceBackend:
    def __init__(self, home: Path, account: Account, check: UpstreamCheck | None = None,
                 wall: Callable[[], int] = wall_ms) -> None:
        self.home = home
        self.account = account
        self.username = account.username
        self.role = account.role
        self.check = check or Upstream().check_password
        self.wall = wall
        self._head_conn: sqlite3.Connection | None = None  # polled ten times a second: kept open
        self._head_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.home / DB_NAME, isolation_level=None, timeout=10.0, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")  # as every connection to the store (pulse_cli/store/connection.py)
        return conn

    # -- signing in ---------------------------------------------------------------------------------
    def sign_in(self, username: str, password: str) -> Signed | None:
        from pulse_server.device.ports import Signed
        from pulse_server.errors import ApiError

        if not hmac.compare_digest(username.encode(), self.username.encode()):
            return None
        verdict = self.check(self.account, username, password)
        conn = self._connect()
        try:
            stored = read_meta(conn, meta.WEB_PASSWORD)
            if verdict is False:
                return None
            if verdict is None:  # the sync server did not answer: only a password it confirmed before
                if stored is None:
                    raise ApiError(503, "unavailable", "password: the sync server cannot be reached to check it; "
                                   "sign in once while online", headers={"Retry-After": "30"})
                if not _matches(stored, password):
                    return None
            else:
                save_account(self.home, self.account)  # the sync server's fresh token for this device
                salt = os.urandom(16)
                write_meta(conn, meta.WEB_PASSWORD, f"scrypt${salt.hex()}${_scrypt(password, salt).hex()}")
            token = os.urandom(32).hex()
            expires = (dt.datetime.now(dt.UTC) + TOKEN_TTL).replace(microsecond=0)
            conn.execute("DELETE FROM web_tokens WHERE expires_at < ?", (_now(),))
            conn.execute("INSERT INTO web_tokens (token_hash, expires_at) VALUES (?, ?)",
                         (_digest(token), expires.isoformat()))
            return Signed(token, expires.isoformat())
        finally:
            conn.close()

    def authenticate(self, token: str) -> bool:
        if not token:
            return False
        conn = self._connect()
        try:
            row = conn.execute("SELECT 1 FROM web_tokens WHERE token_hash = ? AND expires_at > ?",
                               (_digest(token), _now())).fetchone()
            return row is not None
        finally:
            conn.close()

    def account_id(self) -> str | None:
        conn = self._connect()
        try:
            return read_meta(conn, meta.ACCOUNT_ID)
        finally:
            conn.close()

    def now_ms(self) -> int:
        """This device's clock corrected by the offset it learned from its sync server: the time the
        pages it serves take as the server's (their offset then matches the device's own)."""
        conn = self._connect()
        try:
            return self._corrected_ms(conn)
        finally:
            conn.close()

    def _corrected_ms(self, conn: sqlite3.Connection) -> int:
        return self.wall() + int(read_meta(conn, meta.CLOCK_OFFSET_MS) or 0)

    # -- writes -------------------------------------------------------------------------------------
    def push(self, client_id: str, mutations: Sequence[Mapping[str, Any]]) -> Pushed:
        from pulse_server.device.ports import Pushed

        conn = self._connect()
        try:
            now_ms = self._corrected_ms(conn)
            today = dt.datetime.fromtimestamp(now_ms / 1000).date()
            before = high_water(conn, client_id)
            results = relay_batch(SqliteUnitOfWork(conn, self.wall), client_id, mutations, now_ms, today)
            return Pushed(results, now_ms, _head(conn), before)
        finally:
            conn.close()

    def refused(self, client_id: str, limit: int) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            return refused_since(conn, client_id, limit)
        finally:
            conn.close()

    def hand_back(self, client_id: str, seqs: Sequence[int]) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                hand_back(conn, client_id, seqs)
        finally:
            conn.close()

    def conflicts(self, limit: int, after_version: int | None) -> list[dict[str, Any]]:
        from pulse_cli.agent.conflicts import listed

        conn = self._connect()
        try:
            return listed(conn, include_closed=True, after_version=after_version, limit=limit)
        finally:
            conn.close()

    def dismiss_conflicts(self, ids: Sequence[int]) -> None:
        from pulse_cli.agent.conflicts import dismiss

        conn = self._connect()
        try:
            dismiss(conn, *ids)
        finally:
            conn.close()

    def erasures(self, after: int, limit: int) -> list[dict[str, Any]]:
        from pulse_cli.agent.erasures import owner_erasures

        conn = self._connect()
        try:
            return owner_erasures(conn, after, limit, self.username)
        finally:
            conn.close()

    # -- the shape log ------------------------------------------------------------------------------
    def log_id(self) -> str:
        conn = self._connect()
        try:
            return meta_once(conn, meta.SHAPE_LOG_ID)
        finally:
            conn.close()

    def head(self) -> int:
        with self._head_lock:
            if self._head_conn is None:
                self._head_conn = self._connect()
            return _head(self._head_conn)

    def snapshot(self) -> tuple[list[Row], int]:
        conn = self._connect()
        try:
            conn.execute("BEGIN")  # one read transaction: the rows and the head agree
            owner = read_meta(conn, meta.OWNER_USER_ID) or "0"
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM entries WHERE user_id = '' ORDER BY date").fetchall()
            head = _head(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return [_shape_row(r, owner) for r in rows], head

    def changes_after(self, position: int, limit: int) -> tuple[list[LogChange], int]:
        from pulse_server.device.ports import LogChange

        conn = self._connect()
        try:
            conn.execute("BEGIN")
            owner = read_meta(conn, meta.OWNER_USER_ID) or "0"
            log = conn.execute("SELECT seq, date, op FROM shape_log WHERE seq > ? ORDER BY seq LIMIT ?",
                               (position, limit)).fetchall()
            reached = log[-1][0] if log else max(position, _head(conn))
            latest: dict[str, int] = {}
            for seq, date, _ in log:  # several writes of one day in this range: only the newest state counts
                latest[date] = seq
            current = {}
            if latest:
                marks = ", ".join("?" for _ in latest)
                current = {r[1]: r for r in conn.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM entries WHERE user_id = '' AND date IN ({marks})",
                    list(latest))}
            conn.execute("COMMIT")
        finally:
            conn.close()
        changes = []
        for date, seq in sorted(latest.items(), key=lambda item: item[1]):
            row = current.get(date)
            if row is None:
                changes.append(LogChange(seq, "delete", {"user_id": owner, "date": date}))
            else:
                changes.append(LogChange(seq, "update", _shape_row(row, owner)))
        return changes, reached


def _head(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM shape_log").fetchone()[0])


def _shape_row(row: tuple[Any, ...], owner: str) -> Row:
    """A local row in Postgres text format, as the cloud server's shape carries it."""
    values = dict(zip(COLUMNS, row, strict=True))
    out: Row = {}
    for column, value in values.items():
        if column == "user_id":
            out[column] = owner
        elif value is None:
            out[column] = None
        elif column in DECIMALS:
            out[column] = str(Decimal(value).quantize(Decimal("0.01")))
        elif column == "deleted":
            out[column] = "t" if value else "f"
        else:
            out[column] = str(value)
    return out


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)


def _matches(stored: str | None, password: str) -> bool:
    if not stored:
        return False
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt)), bytes.fromhex(digest))


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def load_backend(home: Path, upstream: Upstream) -> SqliteDeviceBackend | None:
    account = load_account(home)
    return None if account is None else SqliteDeviceBackend(home, account, upstream.check_password)
