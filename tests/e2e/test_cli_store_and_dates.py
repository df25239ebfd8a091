"""The store keeps health data to its owner, and dates are bounded where they must be and only there:
no day before 1900 anywhere, writes at most a day ahead, reads over any range."""

from __future__ import annotations

import datetime as dt
import stat
from typing import Any

import pytest
from calendar_days import today

pytestmark = pytest.mark.e2e



def mode(path: Any) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_store_is_readable_by_its_owner_only_in_a_folder_only_its_owner_lists(pulse: Any) -> None:
    assert pulse("log", "--steps", "100").returncode == 0
    assert mode(pulse.home) == 0o700
    assert mode(pulse.home / "pulse.db") == 0o600


def test_a_store_made_readable_by_others_is_closed_again_at_the_next_command(pulse: Any) -> None:
    assert pulse("log", "--steps", "100").returncode == 0
    pulse.home.chmod(0o755)
    (pulse.home / "pulse.db").chmod(0o644)
    assert pulse("show").returncode == 0
    assert (mode(pulse.home), mode(pulse.home / "pulse.db")) == (0o700, 0o600)


def test_a_folder_holding_other_files_keeps_its_own_mode(pulse: Any) -> None:
    pulse.home.mkdir(mode=0o755)
    pulse.home.chmod(0o755)
    (pulse.home / "notes.txt").write_text("not ours")
    assert pulse("log", "--steps", "100").returncode == 0
    assert mode(pulse.home) == 0o755, "a folder of the user's own is not ours to lock"
    assert mode(pulse.home / "pulse.db") == 0o600


@pytest.mark.parametrize("day", ["1899-12-31", "0001-01-01"])
def test_a_day_before_1900_is_refused_in_one_line(pulse: Any, day: str) -> None:
    for args in (["log", "--date", day, "--steps", "1"], ["show", day], ["history", "--from", day]):
        done = pulse(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip() == f"error: date: {day} is out of range (allowed from 1900-01-01)".replace(
            "date:", "from:" if args[0] == "history" else "date:"), done.stderr
        assert "Traceback" not in done.stderr


def test_a_read_range_may_end_anywhere_but_a_write_at_most_a_day_ahead(pulse: Any) -> None:
    assert pulse("log", "--date", "yesterday", "--steps", "5000").returncode == 0
    year_end = dt.date(today().year + 1, 12, 31).isoformat()
    history = pulse.json("history", "--from", f"{today().year}-01-01", "--to", year_end)
    assert [e["steps"] for e in history["entries"]] == [5000]
    assert history["to"] == year_end
    ahead = (today() + dt.timedelta(days=2)).isoformat()
    done = pulse("log", "--date", ahead, "--steps", "1")
    assert done.returncode == 2 and "in the future" in done.stderr
