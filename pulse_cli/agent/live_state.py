"""What the agent's live pull is doing, for `pulse status`: following the server, or failing and about to
follow again (and why). Kept in a small file of its own beside the store, not in the store: the failure
it must tell of may be the store itself (held by another writer, refusing a write).

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
FOLLOWING = "following"
RETRYING = "retrying"


class LiveState:
    """The live pull's side: `following()` and `failed(...)` write the file when the state changes."""

    def __init__(self, home: Path) -> None:
        self.path = home / FILE
        self.state: str | None = None
        self.error: str | None = None

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
        record = {"state": state, "error": error, "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "pid": os.getpid(), "started": started(os.getpid())}
        temporary = self.path.with_name(f".{FILE}.{os.getpid()}")
        try:
            temporary.write_text(json.dumps(record))
            os.replace(temporary, self.path)
        except OSError:
            return  # the home not writable: the log still says it; tried again at the next change
        self.state, self.error = state, error


def read(home: Path) -> dict[str, Any] | None:
    """The live pull's state ({"state", "error", "since", "pid"}), or None: no agent follows this store."""
    try:
        record = json.loads((home / FILE).read_text())
        pid = int(record["pid"])
        state = str(record["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state not in (FOLLOWING, RETRYING) or not _alive(pid):
        return None
    now = started(pid)
    if record.get("started") is not None and now is not None and record["started"] != now:
        return None  # that id names another process now: the agent that wrote the file is gone
    return {"state": state, "error": record.get("error"), "since": record.get("since"), "pid": pid}


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
