"""The folder a server of several processes shares its metrics in (pulse_server/metrics_folder.py): made
before any process starts, removed as the server stops, and one left by a server killed outright is
removed by the next server to start, so /tmp does not fill with them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
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


def test_scrapes_at_once_each_drop_the_gone_processes_without_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers answering /metrics at the same moment both find a process gone and both remove its
    files: the second found them removed under it, and its scrape failed (FileNotFoundError, a 500)."""
    monkeypatch.setenv(metrics_folder.MULTIPROC_DIR, str(tmp_path))
    gone = [int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                               text=True, check=True).stdout) for _ in range(3)]
    failures: list[BaseException] = []

    def scrape() -> None:
        try:
            metrics_folder.forget_the_ended()
        except BaseException as exc:  # collected for the assertion
            failures.append(exc)

    for _ in range(50):
        for pid in gone:
            for mode in ("liveall", "livemax", "livesum", "livemin", "livemostrecent"):
                (tmp_path / f"gauge_{mode}_{pid}.db").touch()
        kept = tmp_path / f"gauge_liveall_{os.getpid()}.db"  # this process lives: its files stay
        kept.touch()
        scrapes = [threading.Thread(target=scrape) for _ in range(4)]
        for thread in scrapes:
            thread.start()
        for thread in scrapes:
            thread.join()
        assert [p.name for p in tmp_path.iterdir()] == [kept.name]
    assert failures == []


def test_a_process_that_ended_but_is_not_reaped_yet_counts_as_gone() -> None:
    # A worker killed outright stays a zombie until the supervisor reaps it: its state must not be reported.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never ended"
            time.sleep(0.02)
        assert not metrics_folder._alive(child.pid)
        assert metrics_folder._alive(os.getpid())
    finally:
        child.wait()
