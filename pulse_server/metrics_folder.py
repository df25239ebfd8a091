"""Where a server of several processes keeps its shared metrics (prometheus_client's multiprocess mode:
`pulse_server.metrics`). Standard library only: `serve` sets the folder before prometheus_client is
imported in any of its processes, this one included (the library reads it once, as it is imported)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "pulse-metrics-"  # then the serving process's id: a folder whose process is gone is removed


def share_between_processes() -> str | None:
    """Before the server's processes start (and before prometheus_client is imported in this one, which
    reads the folder once, as it is imported): their metrics go to one folder. A new temporary one, returned
    for `unshare` to remove; None when the operator set PROMETHEUS_MULTIPROC_DIR (theirs to manage)."""
    if os.environ.get(MULTIPROC_DIR):
        return None
    _remove_orphans()
    folder = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    os.environ[MULTIPROC_DIR] = folder
    return folder


def _remove_orphans() -> None:
    """Folders of servers that ended without removing theirs (killed outright): their process is gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        pid = folder.name.removeprefix(PREFIX).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether the process runs: a zombie (killed, not yet reaped by the server's supervisor, which takes a
    while on a busy machine) is gone already."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:1]
    except OSError:
        return True  # no /proc: by the signal alone
    return state != ["Z"]


def unshare(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(MULTIPROC_DIR, None)


def shared() -> bool:
    """Whether this process's metrics are shared with the server's other processes."""
    return bool(os.environ.get(MULTIPROC_DIR))


def forget_the_ended() -> None:
    """Before the shared figures are read: the `live*` gauges of every process of the server that is gone
    leave them, whether it stopped, died (a reader process, started again) or was killed outright (the
    kernel's OOM killer, SIGKILL), so a dead process's reader state is never reported as if it still ran."""
    folder = os.environ.get(MULTIPROC_DIR)
    if not folder:
        return
    from prometheus_client import multiprocess

    pids = {path.stem.rpartition("_")[2] for path in Path(folder).glob("gauge_live*_*.db")}
    for pid in pids:
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):  # another worker's scrape removed them first
                multiprocess.mark_process_dead(int(pid))  # type: ignore[no-untyped-call]
