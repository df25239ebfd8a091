"""Where a server of several processes keeps its shared metrics (prometheus_client's multiprocess mode:
`pulse_server.metrics`). Standard library only: `serve` sets the folder before prometheus_client is
imported in any of its processes, this one included (the library reads it once, as it is imported)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes() -> str | None:
    """Before the server's processes start: their metrics go to one folder. A new temporary one, returned
    for `unshare` to remove; None when the operator set PROMETHEUS_MULTIPROC_DIR (theirs to manage)."""
    assert "prometheus_client" not in sys.modules, "the folder is read once, as prometheus_client is imported"
    if os.environ.get(MULTIPROC_DIR):
        return None
    folder = tempfile.mkdtemp(prefix="pulse-metrics-")
    os.environ[MULTIPROC_DIR] = folder
    return folder


def unshare(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(MULTIPROC_DIR, None)


def shared() -> bool:
    """Whether this process's metrics are shared with the server's other processes."""
    return bool(os.environ.get(MULTIPROC_DIR))
