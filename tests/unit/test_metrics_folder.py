"""The folder a server of several processes shares its metrics in (pulse_server/metrics_folder.py): made
before any process starts, removed as the server stops, and one left by a server killed outright is
removed by the next server to start, so /tmp does not fill with them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pulse_server import metrics_folder


def test_a_folder_whose_server_is_gone_is_removed_and_a_live_ones_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv(metrics_folder.MULTIPROC_DIR, raising=False)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    orphan = tmp_path / f"{metrics_folder.PREFIX}{ended.stdout.strip()}-x1"  # its process has ended
    live = tmp_path / f"{metrics_folder.PREFIX}{os.getpid()}-x2"
    other = tmp_path / "pulse-metrics-not-a-pid"
    for folder in (orphan, live, other):
        folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again

    made = metrics_folder.share_between_processes()

    assert made is not None and Path(made).parent == tmp_path and os.environ[metrics_folder.MULTIPROC_DIR] == made
    assert not orphan.exists() and live.exists() and other.exists()
    metrics_folder.unshare(made)
    assert not Path(made).exists() and metrics_folder.MULTIPROC_DIR not in os.environ


def test_the_operators_own_folder_is_used_and_never_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(metrics_folder.MULTIPROC_DIR, str(tmp_path))
    assert metrics_folder.share_between_processes() is None
    metrics_folder.unshare(None)
    assert tmp_path.exists() and metrics_folder.shared()
