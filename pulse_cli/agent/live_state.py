"""What the agent's live pull is doing, for `pulse status`: connecting (started, no answer yet), following
the server, or failing and about to follow again (and why); and, in a second file, why its sync rounds
fail while they do. Kept in small files of their own beside the store, not in the store: the failure
they must tell of may be the store itself (held by another writer, refusing a write).

Written by the live pull on each change of state only (atomically: a reader sees the old file or the
new); removed when the agent stops. A file whose process is gone (the agent was killed) is not reported,
nor one whose process id now names another process (the id reused after the agent was killed): where the
system says when a process started (Linux's /proc), the file holds it, and it must match."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

FILE = "agent-live.json"
ROUND_FILE = "agent-round.json"  # the agent's rounds failing: since when, and the last error
CONNECTING = "connecting"  # started, and the server has not answered yet
FOLLOWING = "following"
RETRYING = "retrying"


class LiveState:
    """The live pull's side: `connecting()`, `following()` and `failed(...)` write the file when the state
    changes."""

    def __init__(self, home: Path) -> None:
        self.path = home / FILE
        self.state: str | None = None
        self.error: str | None = None

    def connecting(self) -> None:
        self._set(CONNECTING, None)

    def following(self) -> None:
        self._set(FOLLOWING, None)

    def failed(self, exc: BaseException) -> None:
        self._set(RETRYING, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])

    def clear(self) -> None:
        self.state = self.error = None
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def _set(self, state: str, error: str | None) -> None:
        if (state, error) == (self.state, self.error):
            return
        if _write(self.path, {"state": state, "error": error, "since": _now()}):
            self.state, self.error = state, error


class RoundState:
    """The sync rounds' side: `failed(message)` after a round that failed (the file says since when, and the
    last error), `succeeded()` after one that did not (the file goes)."""

    def __init__(self, home: Path) -> None:
        self.path = home / ROUND_FILE
        self.since: str | None = None
        self.error: str | None = None

    def failed(self, message: str) -> None:
        """Written at every failed round (`at`: its time), so that a sync passing later (`pulse sync` run by
        hand, or after `pulse login`) is seen to be newer than the failure."""
        message = message.splitlines()[0][:300] if message else "failed"
        now = _now()
        since = self.since or now
        if _write(self.path, {"error": message, "since": since, "at": now}):
            self.since, self.error = since, message

    def succeeded(self) -> None:
        if self.error is None and self.since is None:
            return
        self.since = self.error = None
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    clear = succeeded


def read(home: Path) -> dict[str, Any] | None:
    """The live pull's state ({"state", "error", "since", "pid"}), or None: no agent follows this store."""
    record = _read(home / FILE)
    if record is None or record.get("state") not in (CONNECTING, FOLLOWING, RETRYING):
        return None
    return {"state": record["state"], "error": record.get("error"), "since": record.get("since"),
            "pid": record["pid"]}


def read_rounds(home: Path) -> dict[str, Any] | None:
    """Why the running agent's sync rounds fail ({"error", "since", "at", "pid"}), or None: they do not (or no
    agent)."""
    record = _read(home / ROUND_FILE)
    if record is None or not isinstance(record.get("error"), str):
        return None
    return {"error": record["error"], "since": record.get("since"), "at": record.get("at"), "pid": record["pid"]}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write(path: Path, record: dict[str, Any]) -> bool:
    """The record with this process's id and start, in place of the file at once (a reader sees the old file
    or the new); False when it cannot be written (the home not writable: the log still says it)."""
    record = {**record, "pid": os.getpid(), "started": started(os.getpid())}
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)
    except OSError:
        return False
    return True


def _read(path: Path) -> dict[str, Any] | None:
    """A state file's record while the process that wrote it lives (with "pid" an int), else None."""
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(record, dict) or not _alive(pid):
        return None
    now = started(pid)
    if record.get("started") is not None and now is not None and record["started"] != now:
        return None  # that id names another process now: the agent that wrote the file is gone
    return {**record, "pid": pid}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def started(pid: int) -> str | None:
    """When the process `pid` started (clock ticks since boot, /proc/<pid>/stat's 22nd field), which tells two
    processes that had the same id apart; None where the system does not say (no /proc) or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": the 3rd field on; comm may hold spaces
    return fields[19] if len(fields) > 19 else None
