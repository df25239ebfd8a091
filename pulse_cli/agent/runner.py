"""What the CLI commands call: one sync round with its errors made plain, status, conflicts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from pulse_cli.agent import outbox
from pulse_cli.agent.account import Account, load_account
from pulse_cli.agent.breaker_state import load_breaker
from pulse_cli.agent.upstream import Upstream
from pulse_cli.bootstrap import Device
from pulse_cli.store import meta
from pulse_cli.store.connection import read_meta, write_meta
from pulse_cli.sync_text import plural
from pulse_core.errors import NotFoundError, PulseError, UsageError
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


class NotAServer(PulseError):
    code = "not_a_server"


def server_url(value: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash, or a one-line UsageError."""
    from urllib.parse import urlsplit

    allowed = "http://HOST[:PORT] or https://HOST[:PORT]"
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("server", value, allowed, f"server: {value!r} is not a server URL (allowed {allowed})")
    path = parts.path.rstrip("/")
    if path.endswith("/app") or parts.query or parts.fragment:
        base = f"{parts.scheme}://{parts.netloc}{path.removesuffix('/app')}"
        raise UsageError("server", value, allowed,
                         f"server: {value!r} is the web app's address, not the server's (use {base})"
                         if path.endswith("/app") else f"server: {value!r} has a query (allowed {allowed})")
    return f"{parts.scheme}://{parts.netloc}{path}"


def sign_in(
    server: str, username: str, password: str, upstream: Upstream | None = None
) -> tuple[dict[str, Any], dict[str, Any], float, float]:
    """A token and the account (`/v1/me`, with the server's time) from the server, and when `/v1/me` was
    asked and answered, every failure as one line: a wrong username or password (exit 1), a server that
    cannot be reached (exit 3), something that is not a sync server."""
    from sync.client import SIGN_IN_RETRY
    from sync.errors import AuthExpired, Offline, ServerRefused

    url = server_url(server)
    upstream = upstream or Upstream()
    try:
        with upstream.client(url, retry=SIGN_IN_RETRY) as anonymous:
            _check_is_pulse(anonymous, url)
            token = anonymous.login(username, password)
        with upstream.client(url, token["access_token"], retry=SIGN_IN_RETRY) as client:
            sent_at = time.time()
            me = client.me()
            received_at = time.time()
    except AuthExpired as exc:
        raise LoginRequired("login: username or password is wrong") from exc
    except Offline as exc:
        raise Unreachable(str(exc)) from exc
    except ServerRefused as exc:
        if not exc.code:  # no error body of the sync server's: a proxy's or a portal's answer
            raise PulseError(f"login: {url} answered {exc.status}, not as the sync server does ({exc})") from exc
        raise PulseError(f"login: the server refused: {exc}") from exc
    return token, me, sent_at, received_at


def _check_is_pulse(client: Any, url: str) -> None:
    """The public rules document answers as only an NGX Pulse server does (GET, no side effect)."""
    import httpx

    from sync.client import why_unreachable

    try:
        response = client.http.get("/v1/rules")
    except httpx.TransportError as exc:
        raise Unreachable(f"cannot reach {url}: {why_unreachable(exc)}") from exc
    try:
        ours = response.status_code == 200 and "limits" in response.json()
    except ValueError:
        ours = False
    if not ours:
        kind = response.headers.get("content-type", "?").split(";")[0]
        raise NotAServer(f"server: that is not an NGX Pulse server: {url} answered {response.status_code} ({kind})"
                         " to GET /v1/rules")


def run_sync(device: Device, push_only: bool = False, automatic: bool = False) -> SyncReport:
    """One round. An automatic one (the agent's) waits while the breaker is open; one the user asked for
    always tries at once: first one short probe when the last round found the server away, so a server
    still away costs two seconds at most, not the retries of a whole round."""
    from pulse_cli.agent import erasures

    account = require_account(device)
    erasures.scrub_if_due(device.conn)  # an erasure's files rewritten: needs no server, so before reaching it
    breaker = load_breaker(device.conn)
    now = time.time()
    if automatic and breaker.is_open(now):  # answer at once, without even loading the HTTP stack
        raise Unreachable(f"offline: {_queued(device)} (server unreachable: {breaker.state.last_error};"
                          f" next try in {breaker.retry_in(now):.0f} s)")
    from pulse_cli.agent.engine import SyncEngine
    from sync.errors import AuthExpired, Offline, ServerRefused, ShapeError

    with device.upstream.client(account.server, account.token) as client:
        if breaker.state.failures and not client.probe():
            raise Unreachable(f"offline: {_queued(device)} (cannot reach {account.server})")
        engine = SyncEngine(device, account, client)
        try:
            report = engine.sync(push_only=push_only, automatic=automatic)
        except Offline as exc:
            raise Unreachable(f"offline: {_queued(device)} ({exc})") from exc
        except AuthExpired as exc:
            raise _login_required(device, account, exc) from exc
        except ServerRefused as exc:
            if not exc.code and not isinstance(exc, ShapeError):  # a push answer without the sync server's
                # error body: not its answer (engine._about_the_batch)
                raise PulseError(f"server: {account.server} answered {exc.status}, not as the sync server does (a"
                                 f" proxy in front of it, or a wrong address?): {_queued(device)}") from exc
            raise PulseError(f"server: {exc}") from exc
    with device.conn:
        device.conn.execute("BEGIN IMMEDIATE")
        write_meta(device.conn, meta.LAST_SYNC, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        write_meta(device.conn, meta.ACCOUNT_ROLE, account.role)
    return report


def _login_required(device: Device, account: Account, exc: Any) -> LoginRequired:
    """A refused token stops the round. If its account was erased as a whole, the erasure is applied first
    (docs/erasure.md): this device drops every entry of the account before asking to log in again."""
    from pulse_cli.agent import erasures
    from sync.erasure import ACCOUNT_ERASED

    if exc.code == ACCOUNT_ERASED:
        erased = erasures.apply_account_erasure(device.conn, exc.error, account.username)
        if erased is not None:
            return LoginRequired(f"account: every entry of {account.username} was erased on the server and its"
                                 " sign-ins revoked; this device dropped them too; log in again to start afresh")
    return LoginRequired(f"token: {exc}; your {outbox.counts(device.conn).get('pending', 0)} queued changes are kept")


def _queued(device: Device) -> str:
    return plural(outbox.counts(device.conn).get("pending", 0), "change") + " queued"


def discard(device: Device, seq: int | None = None) -> int:
    """Drop one rejected (or pending) change, or every pending one, and show the view without it."""
    from pulse_cli.agent import replica

    with device.conn:
        device.conn.execute("BEGIN IMMEDIATE")
        chosen = "status = 'pending'" if seq is None else "seq = ? AND status IN ('rejected', 'pending')"
        rows = device.conn.execute(f"SELECT user_id, date FROM outbox WHERE {chosen}",
                                   () if seq is None else (seq,)).fetchall()
        if seq is None:
            count = device.conn.execute("UPDATE outbox SET status = 'discarded' WHERE status = 'pending'").rowcount
        else:
            count = int(outbox.discard(device.conn, seq))
        replica.refresh_view(device.conn, {(r[0], r[1]) for r in rows})
    return count


def sync_status(device: Device) -> dict[str, Any]:
    from pulse_cli.agent import conflicts, live_state
    from pulse_cli.store import clock

    account = load_account(device.home)
    counts = outbox.counts(device.conn)
    breaker = load_breaker(device.conn)
    offset = clock.offset_ms(device.conn)
    return {
        "server": account.server if account else None,
        "username": account.username if account else read_meta(device.conn, meta.ACCOUNT_USERNAME),
        "role": account.role if account else None,
        "logged_in": account is not None,
        "last_sync": read_meta(device.conn, meta.LAST_SYNC),
        "pending": counts.get("pending", 0),
        "rejected": counts.get("rejected", 0),
        "conflicts": conflicts.open_count(device.conn),
        "breaker": breaker.name(time.time()),
        "breaker_retry_in_s": round(breaker.retry_in(time.time()), 1),
        "clock_offset_ms": offset,
        "clock": (f"this device's clock is {clock.describe_offset(offset)} the server's: dates and stamps use"
                  " the server's time") if abs(offset) > clock.FAR_OFF_MS else "ok",
        "client_id": read_meta(device.conn, meta.CLIENT_ID),
        "live_pull": live_state.read(device.home),
        "agent_rounds": _still_failing(live_state.read_rounds(device.home), read_meta(device.conn, meta.LAST_SYNC)),
        "scrub_due": read_meta(device.conn, meta.SCRUB_DUE) == "1",
    }


def _still_failing(rounds: dict[str, Any] | None, last_sync: str | None) -> dict[str, Any] | None:
    """The agent's round failure, unless a sync passed after it (by hand, or after `pulse login`)."""
    if rounds is None or not last_sync or not rounds.get("at"):
        return rounds
    try:
        passed_since = dt.datetime.fromisoformat(last_sync) > dt.datetime.fromisoformat(str(rounds["at"]))
    except ValueError:
        return rounds
    return None if passed_since else rounds


def list_conflicts(device: Device, include_closed: bool = False) -> list[dict[str, Any]]:
    from pulse_cli.agent import conflicts

    return conflicts.listed(device.conn, include_closed)


def reassert_conflict(device: Device, conflict_id: int) -> Any:
    """Log the value that lost as a new edit, which is later than the winner and so wins."""
    found = [c for c in list_conflicts(device, include_closed=True) if c["id"] == conflict_id]
    if not found:
        raise NotFoundError(f"conflict: no conflict {conflict_id} (pulse conflicts --all lists them)")
    conflict = found[0]
    lost = conflict["lost"]
    fields: dict[str, object] = dict(lost) if isinstance(lost, dict) else {conflict["field"]: lost}
    clear = [name for name, value in fields.items() if value is None and name != "hrv_method"]
    raw = {k: v for k, v in fields.items() if v is not None}
    return log_entry(device.uow(), device.user, conflict["date"], raw, device.today, clear).entry


def dismiss_conflict(device: Device, conflict_id: int) -> None:
    from pulse_cli.agent import conflicts

    if not conflicts.dismiss(device.conn, conflict_id):
        if any(c["id"] == conflict_id for c in conflicts.listed(device.conn)):
            raise NotFoundError(f"conflict: {conflict_id} is already dismissed")
        raise NotFoundError(f"conflict: no conflict {conflict_id} (pulse conflicts --all lists them)")


def erase_entries(device: Device, first: dt.date | None, last: dt.date | None) -> dict[str, Any]:
    """Erase the user's entries of these days on the server (`DELETE /v1/me/entries`) and apply the
    erasure here at once; the server's answer (the erasure and what it removed), with `refused`: this
    device's queued changes of those days that the erasure refuses (docs/erasure.md)."""
    from pulse_cli.agent import erasures
    from sync.client import PUSH_RETRY
    from sync.erasure import Erasure
    from sync.errors import AuthExpired, Offline, ServerRefused

    account = require_account(device)
    if account.role == "coach":
        raise PulseError("erase: a coach's account holds no entries of its own (an athlete erases theirs with"
                         " pulse erase on their device)")
    before = outbox.counts(device.conn).get("rejected", 0)
    retry = dataclasses.replace(PUSH_RETRY, attempts=2)  # a person is waiting for the answer
    try:
        with device.upstream.client(account.server, account.token, retry) as client:
            body = client.erase(None if first is None else first.isoformat(),
                                None if last is None else last.isoformat())
    except Offline as exc:
        raise Unreachable(f"offline: nothing was erased; erasing needs the server ({exc})") from exc
    except AuthExpired as exc:
        raise _login_required(device, account, exc) from exc
    except ServerRefused as exc:
        raise PulseError(f"server: {exc}") from exc
    erasures.apply(device.conn, [Erasure.from_json(body["erasure"])], account.username)
    return {**body, "refused": outbox.counts(device.conn).get("rejected", 0) - before}
