"""`pulse report` for the team in every format (md, csv, json, html, pdf), and the command's rules."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from raw_figures import fitbit_days
from report_support import Pulse

TEAM = 33
METRICS = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "score")
PAGE = re.compile(rb"/Type\s*/Page[^s]")


def test_json_has_every_athlete_with_the_documented_fields(team_files: dict[str, Path]) -> None:
    data = json.loads(team_files["json"].read_text())
    assert set(data) == {"from", "to", "generated_at", "athletes", "team"}
    assert (data["from"], data["to"]) == ("2016-04-12", "2016-05-12")
    assert len(data["athletes"]) == TEAM and all(a["athlete"].startswith("fitbit-") for a in data["athletes"])
    for athlete in data["athletes"]:
        assert set(athlete) == {"athlete", "today", "utc_offset_min", "calendar", "from", "to", "days_logged",
                                "days_in_range", "compliance", "last_entry", "rolling_7d", "rolling_28d",
                                "range_means", "readiness", "flags", "weeks"}
        assert (athlete["utc_offset_min"], athlete["calendar"]) == (None, "coach")  # seeded: no zone was pushed
        assert set(athlete["rolling_7d"]) == set(METRICS)
        assert set(athlete["readiness"]) == {"hrv_ms", "sleep_hours"}
    assert {row["athlete"] for row in data["team"]} == {a["athlete"] for a in data["athletes"]}


def test_csv_is_long_format_one_row_per_athlete_date_and_metric_with_a_value(
    team_files: dict[str, Path], coach_device: Pulse
) -> None:
    with team_files["csv"].open(newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["athlete", "date", "metric", "value"]
        rows = list(reader)
    assert {r[0] for r in rows} == {f"fitbit-{i}" for i in _ids(team_files)}
    assert {r[2] for r in rows} <= set(METRICS) and "hrv_ms" not in {r[2] for r in rows}
    assert all("2016-04-12" <= r[1] <= "2016-05-12" for r in rows)
    assert len({(r[0], r[1], r[2]) for r in rows}) == len(rows)
    # The same values as the entries themselves, as `pulse report` reads them from the device.
    data = json.loads(team_files["json"].read_text())
    logged = sum(a["days_logged"] for a in data["athletes"])
    assert len({(r[0], r[1]) for r in rows}) == logged
    raw = fitbit_days("1503960366")
    for date, day in raw.items():
        got = {r[2]: r[3] for r in rows if r[0] == "fitbit-1503960366" and r[1] == date.isoformat()}
        assert {m: Decimal(v) for m, v in got.items()} == day, date
    steps = [float(r[3]) for r in rows if r[0] == "fitbit-1503960366" and r[2] == "steps"]
    athlete = next(a for a in data["athletes"] if a["athlete"] == "fitbit-1503960366")
    assert sum(steps) / len(steps) == pytest.approx(athlete["range_means"]["steps"], abs=0.0051)


def _ids(team_files: dict[str, Path]) -> set[str]:
    data = json.loads(team_files["json"].read_text())
    return {a["athlete"].removeprefix("fitbit-") for a in data["athletes"]}


def test_markdown_has_the_roll_up_then_each_athletes_figures_flags_and_weeks(team_files: dict[str, Path]) -> None:
    text = team_files["md"].read_text()
    assert text.startswith("# NGX Pulse report: 2016-04-12 to 2016-05-12\n")
    assert text.count("\n## ") == TEAM + 1 and "\n## Team\n" in text
    team = text.split("\n## Team\n", 1)[1].split("\n## ", 1)[0]
    assert team.count("\n| fitbit-") == TEAM
    section = text.split("\n## fitbit-1503960366\n", 1)[1].split("\n## ", 1)[0]
    assert "Compliance: 30 of 31 days logged (96.8%)" in section
    assert "- `short_sleep`: sleep under 6 h on" in section
    assert "| 2016-W15 | 2016-04-11 |" in section
    assert "| Sleep (h) |" in section and "| Steps |" in section


def test_html_is_self_contained_with_an_svg_chart_per_metric_and_athlete(team_files: dict[str, Path]) -> None:
    page = team_files["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower() and "javascript:" not in page.lower()
    assert re.findall(r"(?:src|href)=\"(?!#)[^\"]*\"", page) == []  # nothing loaded from anywhere
    assert page.count("<svg ") == TEAM * len(METRICS)
    assert page.count('<section class="athlete"') == TEAM
    assert 'data-metric="steps"' in page and 'class="band"' in page and 'class="value"' in page
    assert page.count('href="#athlete-fitbit-') == TEAM  # the roll-up links to each section


def test_pdf_is_a_valid_document_with_the_roll_up_and_every_athlete(team_files: dict[str, Path]) -> None:
    data = team_files["pdf"].read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages = len(PAGE.findall(data))
    assert TEAM <= pages <= 2 * TEAM  # a month of an athlete is most of a page (test_report_pages: no blank ones)
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-layout", str(team_files["pdf"]), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert "NGX Pulse report: 2016-04-12 to 2016-05-12" in text
        assert all(f"fitbit-{i}" in text for i in _ids(team_files))
        assert "short_sleep" in text and "Weekly" in text and "Charts" in text


def test_every_format_goes_to_stdout_without_o_except_pdf(coach_device: Pulse) -> None:
    args = ("report", "--athlete", "fitbit-1503960366", "--from", "2016-04-12", "--to", "2016-05-12")
    outputs = {fmt: coach_device.ok(*args, "--format", fmt).stdout for fmt in ("md", "csv", "json", "html")}
    assert outputs["md"].startswith("# NGX Pulse report")  # not a terminal: Markdown, not the rich summary
    assert outputs["csv"].startswith("athlete,date,metric,value\n")
    assert json.loads(outputs["json"])["athletes"][0]["athlete"] == "fitbit-1503960366"
    alias = json.loads(coach_device.ok(*args, "--json").stdout)
    assert {**alias, "generated_at": None} == {**json.loads(outputs["json"]), "generated_at": None}
    assert outputs["html"].startswith("<!DOCTYPE html>")
    refused = coach_device(*args, "--format", "pdf")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == "error: output: a PDF is written to a file (allowed -o FILE)"


@pytest.mark.parametrize(("args", "message"), [
    (("--format", "xml"), "error: format: 'xml' is not one of md, csv, json, html, pdf"),
    (("--athlete", "nobody-*"), "error: athlete: 'nobody-*' matches no athlete on this device"),
    (("--from", "2016-05-12", "--to", "2016-04-12"), "error: from: 2016-05-12 is after to 2016-04-12"),
])
def test_bad_options_are_one_line_and_exit_2(coach_device: Pulse, args: tuple[str, ...], message: str) -> None:
    done = coach_device("report", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1


def test_writing_to_a_folder_that_does_not_exist_is_one_line(coach_device: Pulse, tmp_path: Path) -> None:
    done = coach_device("report", "--athlete", "fitbit-1503960366", "-o", str(tmp_path / "no" / "such" / "r.md"))
    assert done.returncode == 2 and done.stderr.startswith("error: output: cannot write")


def test_a_device_with_no_athletes_says_so(fresh_device: Pulse) -> None:
    done = fresh_device("report", "--team")
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: athletes: none on this device; sign in as a coach (pulse login)"
                                   " and run pulse sync")
    assert fresh_device.json("coach", "athletes")["athletes"] == []


def test_an_athlete_reports_on_their_own_entries(fresh_device: Pulse) -> None:
    for day, sleep in (("2026-01-01", "5"), ("2026-01-02", "5.5"), ("2026-01-03", "4")):
        fresh_device.ok("log", "--date", day, "--sleep", sleep, "--steps", "8000")
    data: dict[str, Any] = fresh_device.json("report", "--from", "2026-01-01", "--to", "2026-01-03")
    athlete = data["athletes"][0]
    assert athlete["athlete"] == "me" and athlete["days_logged"] == 3
    assert [f["code"] for f in athlete["flags"]] == ["short_sleep"]
    assert athlete["range_means"]["sleep_hours"] == pytest.approx(14.5 / 3, abs=0.0051)
