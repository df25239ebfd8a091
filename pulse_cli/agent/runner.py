"""What the CLI commands call: one sync round with its errors made plain, status, conflicts."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

from pulse_cli.agent import outbox
from pulse_cli.agent.account import Account, load_account
from pulse_cli.agent.breaker_state import load_breaker
from pulse_cli.bootstrap import Device
from pulse_cli.store.connection import read_meta, write_meta
from pulse_core.errors import NotFoundError, PulseError
from pulse_core.usecases import log_entry

if TYPE_CHECKING:
    from pulse_cli.agent.engine import SyncReport


class Unreachable(PulseError):
    """Offline or the server unavailable: nothing is lost, changes stay queued (exit code 3)."""

    code = "offline"


class LoginRequired(PulseError):
    code = "login_required"


def require_account(device: Device) -> Account:
    account = load_account(device.home)
    if account is None:
        raise LoginRequired("account: not logged in; run pulse login --server URL --username NAME")
    return account


def run_sync(device: Device, push_only: bool = False) -> SyncReport:
    account = require_account(device)
    breaker = load_breaker(device.conn)
    if breaker.is_open(time.time()):  # answer at once, without even loading the HTTP stack
        queued = outbox.counts(device.conn).get("pending", 0)
        raise Unreachable(f"offline: {queued} changes queued (server unreachable: {breaker.state.last_error};"
                          f" next try in {breaker.retry_in(time.time()):.0f} s)")
    from pulse_cli.agent.engine import SyncEngine
    from pulse_cli.agent.pull import pull_shape
    from sync.client import AuthExpired, Offline, ServerRefused, SyncClient

    with SyncClient(account.server, account.token) as client:
        engine = SyncEngine(device, account, client, pull=pull_shape)
        try:
            report = engine.sync(push_only=push_only)
        except Offline as exc:
            queued = outbox.counts(device.conn).get("pending", 0)
            raise Unreachable(f"offline: {queued} changes queued ({exc})") from exc
        except AuthExpired as exc:
            raise LoginRequired(f"token: {exc}; your {outbox.counts(device.conn).get('pending', 0)} queued"
                                " changes are kept") from exc
        except ServerRefused as exc:
            raise PulseError(f"server: {exc}") from exc
    with device.conn:
        device.conn.execute("BEGIN IMMEDIATE")
        write_meta(device.conn, "last_sync", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    return report


def discard(device: Device, seq: int | None = None) -> int:
    """Drop one rejected (or pending) change, or every pending one, and show the view without it."""
    from pulse_cli.agent import replica

    with device.conn:
        device.conn.execute("BEGIN IMMEDIATE")
        if seq is None:
            count = device.conn.execute("UPDATE outbox SET status = 'discarded' WHERE status = 'pending'").rowcount
        else:
            count = int(outbox.discard(device.conn, seq))
        pulled = int(read_meta(device.conn, "pulled_lsn") or 0)
        replica.rebuild_view(device.conn, outbox.to_reapply(device.conn, pulled), device.today)
    return count


def sync_status(device: Device) -> dict[str, Any]:
    account = load_account(device.home)
    counts = outbox.counts(device.conn)
    breaker = load_breaker(device.conn)
    return {
        "server": account.server if account else None,
        "username": account.username if account else read_meta(device.conn, "account_username"),
        "role": account.role if account else None,
        "logged_in": account is not None,
        "last_sync": read_meta(device.conn, "last_sync"),
        "pending": counts.get("pending", 0),
        "rejected": counts.get("rejected", 0),
        "conflicts": int(device.conn.execute("SELECT count(*) FROM conflicts").fetchone()[0]),
        "breaker": breaker.name(time.time()),
        "breaker_retry_in_s": round(breaker.retry_in(time.time()), 1),
        "clock_offset_ms": int(read_meta(device.conn, "clock_offset_ms") or 0),
    }


def list_conflicts(device: Device) -> list[dict[str, Any]]:
    rows = device.conn.execute(
        "SELECT id, seq, date, field, kept, lost, kept_hlc, lost_hlc, rule, seen_at FROM conflicts ORDER BY id"
    ).fetchall()
    keys = ("id", "seq", "date", "field", "kept", "lost", "kept_hlc", "lost_hlc", "rule", "seen_at")
    out = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["kept"] = json.loads(item["kept"]) if item["kept"] else None
        item["lost"] = json.loads(item["lost"]) if item["lost"] else None
        out.append(item)
    return out


def reassert_conflict(device: Device, conflict_id: int) -> Any:
    """Log the value that lost as a new edit, which is later than the winner and so wins."""
    found = [c for c in list_conflicts(device) if c["id"] == conflict_id]
    if not found:
        raise NotFoundError(f"conflict: no conflict {conflict_id}")
    conflict = found[0]
    lost = conflict["lost"]
    fields: dict[str, object] = dict(lost) if isinstance(lost, dict) else {conflict["field"]: lost}
    clear = [name for name, value in fields.items() if value is None and name != "hrv_method"]
    raw = {k: v for k, v in fields.items() if v is not None}
    return log_entry(device.uow(), device.user, conflict["date"], raw, device.today, clear).entry
