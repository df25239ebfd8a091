"""The report's figures equal figures computed independently from the raw CSV files (raw_figures.py).

The report is made by the installed `pulse report` on the coach's device, from entries that went
CSV -> seed-demo -> Postgres -> replication -> shape -> the device's replica: the whole path.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from raw_figures import DATA, expected_flags, fitbit_days, mean, rolling, sample_sd, values, welltory_days
from report_support import Pulse

FIRST, LAST = dt.date(2016, 4, 12), dt.date(2016, 5, 12)
METRICS = ("steps", "sleep_hours", "weight_kg", "score")
CLOSE = 0.0051  # the report rounds to 0.01


def approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value, abs=CLOSE)


def report_of(device: Pulse, athlete: str, first: dt.date, last: dt.date) -> dict[str, Any]:
    data = device.json("report", "--athlete", athlete, "--from", first.isoformat(), "--to", last.isoformat())
    assert [a["athlete"] for a in data["athletes"]] == [athlete]
    athlete_data: dict[str, Any] = data["athletes"][0]
    return athlete_data


@pytest.fixture(scope="module")
def team(team_files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    data = json.loads(team_files["json"].read_text())
    return {a["athlete"]: a for a in data["athletes"]}


def fitbit_ids() -> list[str]:
    with (DATA / "fitbit" / "dailyActivity_merged.csv").open(newline="") as f:
        return sorted({row["Id"] for row in csv.DictReader(f)})


def test_every_fitbit_athletes_means_compliance_and_rolling_averages_match_the_raw_files(
    team: dict[str, dict[str, Any]],
) -> None:
    assert len(team) == 33
    for user in fitbit_ids():
        days = fitbit_days(user)
        got = team[f"fitbit-{user}"]
        logged = [d for d in days if FIRST <= d <= LAST]
        assert (got["days_logged"], got["days_in_range"]) == (len(logged), 31), user
        assert got["compliance"] == pytest.approx(len(logged) / 31, abs=0.00005), user
        assert got["last_entry"] == max(days).isoformat(), user
        for metric in METRICS:
            assert got["range_means"][metric] == approx(mean(values(days, metric, FIRST, LAST))), (user, metric)
            assert got["rolling_7d"][metric] == approx(rolling(days, metric, LAST, 7)), (user, metric)
            assert got["rolling_28d"][metric] == approx(rolling(days, metric, LAST, 28)), (user, metric)
        assert got["range_means"]["hrv_ms"] is None  # Fitbit has no HRV: missing, never zero


def test_which_flags_fire_for_every_fitbit_athlete_matches_the_rules_applied_to_the_raw_files(
    team: dict[str, dict[str, Any]],
) -> None:
    fired: dict[str, int] = {}
    for user in fitbit_ids():
        expected = expected_flags(fitbit_days(user), LAST)
        got = {f["code"]: f["numbers"] for f in team[f"fitbit-{user}"]["flags"]}
        assert set(got) == set(expected), user
        for code, numbers in expected.items():
            fired[code] = fired.get(code, 0) + 1
            for key, value in numbers.items():
                assert got[code][key] == value, (user, code, key)
    assert fired == {"short_sleep": 3, "no_entry": 11}  # the month's end, as the raw files have it


def test_short_sleep_names_the_days_and_hours_under_six(coach_device: Pulse) -> None:
    got = report_of(coach_device, "fitbit-1503960366", FIRST, LAST)
    flag = next(f for f in got["flags"] if f["code"] == "short_sleep")
    days = fitbit_days("1503960366")
    short = [d for d in sorted(days) if LAST - dt.timedelta(days=6) <= d and days[d].get("sleep_hours", 99) < 6]
    assert flag["numbers"] == {"days": [d.isoformat() for d in short],
                               "hours": [float(days[d]["sleep_hours"]) for d in short]}
    assert flag["message"] == f"sleep under 6 h on {len(short)} of the last 7 days"


@pytest.mark.parametrize(("first", "last"), [
    (dt.date(2016, 4, 15), dt.date(2016, 4, 25)),
    (dt.date(2016, 4, 12), dt.date(2016, 4, 30)),
])
def test_rolling_averages_are_as_of_the_to_date_and_use_the_days_before_the_range(
    coach_device: Pulse, first: dt.date, last: dt.date
) -> None:
    days = fitbit_days("1503960366")
    got = report_of(coach_device, "fitbit-1503960366", first, last)
    for metric in ("steps", "sleep_hours", "score"):
        assert got["rolling_7d"][metric] == approx(rolling(days, metric, last, 7)), metric
        # 28 days back from the 25th reaches before --from: those days count.
        assert got["rolling_28d"][metric] == approx(rolling(days, metric, last, 28)), metric
        assert got["range_means"][metric] == approx(mean(values(days, metric, first, last))), metric
    sleep = values(days, "sleep_hours", last - dt.timedelta(days=28), last - dt.timedelta(days=1))
    readiness = got["readiness"]["sleep_hours"]
    assert readiness["baseline"]["days"] == len(sleep)
    assert readiness["baseline"]["mean"] == approx(mean(sleep))
    assert readiness["baseline"]["sd"] == approx(sample_sd(sleep))


def test_weekly_rows_are_every_iso_week_of_the_range_with_days_logged_and_means(
    team: dict[str, dict[str, Any]],
) -> None:
    # Every week the month touches, 2016-W15 (from Tuesday 12 April) to 2016-W19 (to Thursday 12 May),
    # for every athlete: a week with no entry is a row with 0 days, not left out.
    mondays = [dt.date(2016, 4, 11) + dt.timedelta(weeks=i) for i in range(5)]
    gaps = 0
    for user in fitbit_ids():
        days = fitbit_days(user)
        got = team[f"fitbit-{user}"]["weeks"]
        assert [(w["week"], w["start"]) for w in got] == [
            (f"2016-W{15 + i}", monday.isoformat()) for i, monday in enumerate(mondays)], user
        for row, monday in zip(got, mondays, strict=True):
            first, last = max(FIRST, monday), min(LAST, monday + dt.timedelta(days=6))
            in_week = [d for d in days if first <= d <= last]
            assert row["days_in_range"] == (last - first).days + 1
            assert row["days_logged"] == len(in_week), (user, row["week"])
            assert row["means"]["steps"] == approx(mean(values(days, "steps", first, last))), (user, row["week"])
            gaps += not in_week
    assert gaps == 16  # weeks with no entry in the raw files: fitbit-4020332650 has W17, nine users W19, ...


@pytest.mark.parametrize("last", [dt.date(2016, 4, 18), dt.date(2016, 5, 10), dt.date(2016, 5, 12)])
def test_weight_change_over_two_percent_within_seven_days(coach_device: Pulse, last: dt.date) -> None:
    days = fitbit_days("6962181067")
    expected = expected_flags(days, last)
    got = {f["code"]: f["numbers"] for f in report_of(coach_device, "fitbit-6962181067", FIRST, last)["flags"]}
    assert ("weight_change" in got) == ("weight_change" in expected)
    if "weight_change" in expected:
        assert got["weight_change"]["low_kg"] == expected["weight_change"]["low_kg"]
        assert got["weight_change"]["high_kg"] == expected["weight_change"]["high_kg"]
        assert got["weight_change"]["pct"] == pytest.approx(expected["weight_change"]["pct"], abs=0.005)
    assert last != dt.date(2016, 4, 18) or "weight_change" in got  # the raw files do move >2% that week


def test_no_entry_counts_the_days_since_the_last_entry(coach_device: Pulse) -> None:
    days = fitbit_days("1844505072")
    got = report_of(coach_device, "fitbit-1844505072", FIRST, LAST)
    last_day = max(days)
    flag = next(f for f in got["flags"] if f["code"] == "no_entry")
    assert flag["numbers"] == {"last_entry": last_day.isoformat(), "days_without": (LAST - last_day).days}
    # Two days without an entry is not yet a flag.
    quiet = report_of(coach_device, "fitbit-1844505072", FIRST, last_day + dt.timedelta(days=2))
    assert "no_entry" not in {f["code"] for f in quiet["flags"]}


def test_hrv_more_than_one_sd_below_the_28_days_before_is_flagged_with_its_numbers(coach_device: Pulse) -> None:
    code, last = "01bad5a519", dt.date(2020, 4, 22)
    days = welltory_days(code)
    expected = expected_flags(days, last)["hrv_low"]
    got = report_of(coach_device, f"welltory-{code}", last - dt.timedelta(days=27), last)
    flag = next(f for f in got["flags"] if f["code"] == "hrv_low")
    assert flag["numbers"]["date"] == expected["date"] and flag["numbers"]["hrv_ms"] == expected["hrv_ms"]
    latest = dt.date.fromisoformat(str(expected["date"]))
    before = values(days, "hrv_ms", latest - dt.timedelta(days=28), latest - dt.timedelta(days=1))
    assert flag["numbers"]["days"] == len(before)
    assert flag["numbers"]["mean"] == approx(mean(before))
    assert flag["numbers"]["sd"] == approx(sample_sd(before))
    assert got["range_means"]["hrv_ms"] == approx(mean(values(days, "hrv_ms", last - dt.timedelta(days=27), last)))
    assert got["rolling_7d"]["hrv_ms"] == approx(rolling(days, "hrv_ms", last, 7))


def test_the_team_roll_up_is_sorted_by_open_flags(team_files: dict[str, Path]) -> None:
    rollup = json.loads(team_files["json"].read_text())["team"]
    assert len(rollup) == 33
    keys = [(-row["flags"], row["athlete"]) for row in rollup]
    assert keys == sorted(keys)
    assert rollup[0]["flags"] >= 1 and rollup[-1]["flags"] == 0
