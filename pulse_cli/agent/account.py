"""The device's account: which server and user this home syncs with, and the token (owner-only file)."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from pulse_cli.store import meta
from pulse_cli.store.connection import read_meta, write_meta
from pulse_core.errors import PulseError

CREDENTIALS = "credentials.json"


class AccountError(PulseError):
    code = "account"


@dataclass
class Account:
    server: str
    username: str
    role: str  # "athlete" | "coach"
    token: str
    expires_at: str


def credentials_path(home: Path) -> Path:
    return home / CREDENTIALS


def load_account(home: Path) -> Account | None:
    path = credentials_path(home)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return Account(**{k: data[k] for k in ("server", "username", "role", "token", "expires_at")})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AccountError(f"credentials: {path} is unreadable ({exc}); run pulse login again") from exc


def save_account(home: Path, account: Account) -> None:
    """Written readable by the owner only (0600), atomically."""
    path = credentials_path(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(account), handle, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def forget_token(home: Path) -> None:
    credentials_path(home).unlink(missing_ok=True)


def bind_home(conn: sqlite3.Connection, server: str, username: str, role: str, account_id: str | None = None) -> None:
    """The first login adopts what was logged before it; another user's login on this home is refused,
    and so is a new account's that was given the name of the one whose data the home holds (`account_id`,
    the server's id of the account: None from a server that does not give it). The role is kept in the
    store, so a coach's home refuses writes without reading the credentials."""
    bound_user = read_meta(conn, meta.ACCOUNT_USERNAME)
    bound_server = read_meta(conn, meta.ACCOUNT_SERVER)
    if bound_user is None:
        write_meta(conn, meta.ACCOUNT_USERNAME, username)
        write_meta(conn, meta.ACCOUNT_SERVER, server)
    elif bound_user != username or bound_server != server:
        raise AccountError(
            f"username: this home holds the data of {bound_user} on {bound_server}; "
            f"use another --home (or PULSE_HOME) to sign in as {username}"
        )
    bound_id = read_meta(conn, meta.ACCOUNT_ID)
    if account_id is not None and bound_id is not None and bound_id != account_id:
        raise AccountError(
            f"username: this home holds the data of an earlier account named {username} on {server}, removed"
            f" from it since (account {bound_id}, now {account_id}); use another --home (or PULSE_HOME) to sign"
            f" in as the new {username}"
        )
    if account_id is not None:
        write_meta(conn, meta.ACCOUNT_ID, account_id)
    write_meta(conn, meta.ACCOUNT_ROLE, role)
