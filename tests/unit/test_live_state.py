"""`pulse status`'s record of the agent's live pull: reported only while the process that wrote it lives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulse_cli.agent import live_state
from pulse_cli.agent.live_state import LiveState

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc: process start times unknown")


def test_the_pull_state_written_is_read_back_with_its_process(tmp_path: Path) -> None:
    state = LiveState(tmp_path)
    state.failed(OSError("database is locked\nsecond line"))
    read = live_state.read(tmp_path)
    assert read is not None
    assert (read["state"], read["error"], read["pid"]) == ("retrying", "OSError: database is locked", os.getpid())
    state.following()
    assert live_state.read(tmp_path) == {**read, "state": "following", "error": None,
                                         "since": json.loads((tmp_path / live_state.FILE).read_text())["since"]}
    state.clear()
    assert live_state.read(tmp_path) is None


def test_a_file_whose_process_is_gone_is_not_reported(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / live_state.FILE).write_text(json.dumps({"state": "following", "error": None, "since": None,
                                                        "pid": int(gone.stdout)}))
    assert live_state.read(tmp_path) is None


@linux_only
def test_a_reused_process_id_is_not_taken_for_the_agent(tmp_path: Path) -> None:
    """The file names a live process id, but that process started at another time than the agent that wrote it
    (the agent was killed and the id given to a new process): no agent is reported."""
    LiveState(tmp_path).following()
    record = json.loads((tmp_path / live_state.FILE).read_text())
    assert record["started"] == live_state.started(os.getpid()) and record["started"].isdigit()
    (tmp_path / live_state.FILE).write_text(json.dumps({**record, "started": str(int(record["started"]) - 1)}))
    assert live_state.read(tmp_path) is None
