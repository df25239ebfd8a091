"""End-to-end fixtures: the installed `pulse` console script, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PULSE = Path(sys.executable).parent / "pulse"
DATA = Path(__file__).resolve().parents[1] / "data"


class Pulse:
    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update({"PULSE_HOME": str(self.home), "COLUMNS": "120", "NO_COLOR": "1"})
        return subprocess.run(
            [str(PULSE), *args], capture_output=True, text=True, env=env, input=input, timeout=120
        )

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def pulse(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    assert PULSE.exists(), f"install the package first: {PULSE} is missing"
    return Pulse(tmp_path / "home")
