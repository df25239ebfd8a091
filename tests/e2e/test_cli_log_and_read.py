"""The installed `pulse` logs and reads entries offline, with clean errors for user mistakes."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

import pytest
from calendar_days import today

pytestmark = pytest.mark.e2e



def test_log_then_history_json_round_trips_every_field(pulse: Any) -> None:
    day = (today() - dt.timedelta(days=2)).isoformat()
    done = pulse("log", "--date", day, "--sleep", "7.25", "--hrv", "48.5", "--hrv-method", "sdnn",
                 "--steps", "8000", "--weight", "71.4", "--note", "easy run")
    assert done.returncode == 0, done.stderr
    history = pulse.json("history")
    assert [e["date"] for e in history["entries"]] == [day]
    entry = history["entries"][0]
    assert entry["sleep_hours"] == 7.25
    assert entry["hrv_ms"] == 48.5 and entry["hrv_method"] == "sdnn"
    assert entry["steps"] == 8000 and entry["weight_kg"] == 71.4 and entry["note"] == "easy run"
    # (7.25*4 + 48.5/5 + 8000/333) / 80 * 100 = (29 + 9.7 + 24.024...) / 0.8 = 78.405... -> 78
    assert entry["score"] == 78 and entry["score_version"] == 1


def test_fields_never_set_are_null_not_zero(pulse: Any) -> None:
    assert pulse("log", "--steps", "5000").returncode == 0
    entry = pulse.json("show")["entry"]
    assert entry["steps"] == 5000
    assert entry["sleep_hours"] is None and entry["hrv_ms"] is None and entry["weight_kg"] is None
    assert entry["score"] is None  # no score without sleep


def test_log_merges_into_the_days_entry(pulse: Any) -> None:
    pulse("log", "--sleep", "6")
    pulse("log", "--steps", "8000")
    entry = pulse.json("show")["entry"]
    assert (entry["sleep_hours"], entry["steps"]) == (6.0, 8000)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sleep", "25"], "sleep_hours: 25 is out of range (allowed 0 to 24 h)"),
        (["--hrv", "0.5"], "hrv_ms: 0.5 is out of range (allowed 1 to 300 ms)"),
        (["--steps", "100001"], "steps: 100001 is out of range (allowed 0 to 100000 steps)"),
        (["--weight", "19.99"], "weight_kg: 19.99 is out of range (allowed 20 to 500 kg)"),
        (["--steps", "abc"], "steps: 'abc' is not a number"),
        (["--date", (today() + dt.timedelta(days=2)).isoformat(), "--steps", "1"], "is in the future"),
    ],
)
def test_an_invalid_value_is_one_line_exit_2_and_changes_nothing(pulse: Any, args: list[str], needle: str) -> None:
    pulse("log", "--sleep", "7")
    before = pulse.json("history")
    done = pulse("log", *args)
    assert done.returncode == 2
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert pulse.json("history") == before


def test_a_future_date_one_day_ahead_is_accepted(pulse: Any) -> None:
    tomorrow = (today() + dt.timedelta(days=1)).isoformat()
    assert pulse("log", "--date", tomorrow, "--steps", "10").returncode == 0


def test_warnings_are_shown_and_the_value_is_kept(pulse: Any) -> None:
    done = pulse("log", "--sleep", "2.5", "--steps", "60000", "--json")
    out = json.loads(done.stdout)
    assert {w["field"] for w in out["warnings"]} == {"sleep_hours", "steps"}
    assert out["entry"]["sleep_hours"] == 2.5


def test_the_weight_warning_compares_only_with_a_weight_from_the_7_days_before(pulse: Any) -> None:
    assert pulse("log", "--date", "2016-05-03", "--weight", "52.6").returncode == 0
    far = pulse("log", "--date", "2016-06-10", "--weight", "64.4")  # 22.4% more, but 38 days later
    assert far.returncode == 0 and "warning" not in far.stdout + far.stderr
    eight = pulse.json("log", "--date", "2016-06-18", "--weight", "60")  # 8 days after 64.4
    assert eight["warnings"] == []
    seven = pulse("log", "--date", "2016-06-25", "--weight", "64.4")  # 7 days after 60: 7.3% more
    assert seven.returncode == 0
    expected = "weight_kg: 64.4 kg is 7.3% from the previous entry of 60 kg on 2016-06-18 (warning above 3%)"
    assert expected in " ".join((seven.stdout + seven.stderr).split())


def test_delete_asks_first_and_yes_skips_the_question(pulse: Any) -> None:
    pulse("log", "--steps", "100")
    refused = pulse("delete", today().isoformat(), input="n\n")
    assert refused.returncode == 1
    assert pulse.json("show")["entry"]["steps"] == 100
    assert pulse("delete", today().isoformat(), input="y\n").returncode == 0
    gone = pulse("show")
    assert gone.returncode == 1 and "no entry" in gone.stderr
    assert pulse("delete", today().isoformat(), "--yes").returncode == 1  # nothing left to delete


def test_every_change_is_in_the_outbox_with_stamps(pulse: Any) -> None:
    pulse("log", "--sleep", "7")
    pulse("log", "--sleep", "8")
    pulse("delete", today().isoformat(), "--yes")
    with sqlite3.connect(pulse.home / "pulse.db") as conn:
        rows = conn.execute("SELECT seq, op, fields, base, hlc FROM outbox ORDER BY seq").fetchall()
    assert [r[1] for r in rows] == ["set", "set", "delete"]
    first, second, tomb = rows
    assert json.loads(first[3]) == {"sleep_hours": None}
    assert json.loads(second[3]) == {"sleep_hours": first[4]}  # base = the stamp it replaced
    assert json.loads(tomb[3])["sleep_hours"] == second[4]
    assert first[4] < second[4] < tomb[4]


def test_home_option_beats_the_environment(pulse: Any, tmp_path: Any) -> None:
    other = tmp_path / "other"
    assert pulse("--home", str(other), "log", "--steps", "42").returncode == 0
    assert (other / "pulse.db").exists()
    assert pulse.json("history")["entries"] == []


def test_export_csv_and_json_hold_the_same_days(pulse: Any, tmp_path: Any) -> None:
    pulse("log", "--date", "yesterday", "--sleep", "7.5", "--steps", "9000")
    pulse("log", "--note", "comma, and \"quotes\"")
    out = tmp_path / "x.csv"
    assert pulse("export", "--format", "csv", "-o", str(out)).returncode == 0
    import csv

    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["date"] for r in rows] == [(today() - dt.timedelta(days=1)).isoformat(), today().isoformat()]
    assert rows[1]["note"] == 'comma, and "quotes"' and rows[1]["steps"] == ""
    data = json.loads(pulse("export", "--format", "json").stdout)
    assert [e["date"] for e in data["entries"]] == [r["date"] for r in rows]
    assert pulse("export", "--format", "xml").returncode == 2


def test_version_and_help_with_examples_on_every_command(pulse: Any) -> None:
    assert pulse("--version").stdout.startswith("pulse ")
    commands = [["log"], ["show"], ["history"], ["trends"], ["delete"], ["export"],
                ["import", "fitbit"], ["import", "welltory"], ["import", "apple-health"]]
    for command in commands:
        done = pulse(*command, "--help")
        assert done.returncode == 0, command
        assert "Examples:" in done.stdout, command
        assert f"pulse {' '.join(command)}" in done.stdout, command
