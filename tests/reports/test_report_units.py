"""The report package on a real SQLite store with made-up entries: no server needed."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from report_support import PULSE, clean_env

from pulse_cli.reports_render.formats import render
from pulse_cli.reports_render.markdown import table
from pulse_cli.reports_render.model import (
    Band,
    Series,
    athlete_calendars,
    athlete_rows,
    build_report,
    chart_series,
    roster,
    select_athletes,
    trailing_bands,
    window_start,
)
from pulse_cli.reports_render.svg import chart_svg, geometry
from pulse_cli.store.connection import open_store, write_meta
from pulse_cli.store.entries import SqliteEntryRepository
from pulse_core.entry import Entry
from pulse_core.errors import NotFoundError, UsageError
from pulse_core.insights import baseline
from pulse_core.reports import Calendar, athlete_report, flags
from pulse_core.score import rescore

START, END = dt.date(2026, 3, 1), dt.date(2026, 4, 30)
NOW = dt.datetime(2026, 4, 30, 12, 0, tzinfo=dt.UTC)  # noon UTC on END: every zone is on END or a day off


def _calendars(store: sqlite3.Connection) -> dict[str, Calendar]:
    """Each athlete of the store's roster as this device sees them on END (no zone known: this device's)."""
    return athlete_calendars(store, roster(store), NOW, END)


def _entry(user: str, day: dt.date, stamp_ms: int = 1_780_000_000_000, **values: object) -> Entry:
    entry = Entry(user=user, date=day, **values)  # type: ignore[arg-type]
    for name in ("sleep_hours", "hrv_ms", "steps", "weight_kg"):
        if getattr(entry, name) is not None:
            entry.stamps[name], entry.sources[name] = f"{stamp_ms:016d}:00000:dev", "sync"
    rescore(entry)
    return entry


@pytest.fixture
def store(tmp_path: Path) -> sqlite3.Connection:
    """A coach's device: two athletes with made-up, gappy days, keyed by username as a sync leaves them."""
    conn = open_store(tmp_path / "home")
    rng = random.Random(7)
    repo = SqliteEntryRepository(conn)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        write_meta(conn, "account_username", "kim")
        for user in ("ana", "bo"):
            for i in range(90):
                day = END - dt.timedelta(days=89 - i)
                if rng.random() < 0.2:
                    continue
                repo.save(_entry(user, day, 1_780_000_000_000 + i,
                                 sleep_hours=Decimal(str(round(rng.uniform(4.5, 9), 2))),
                                 steps=rng.randint(2000, 15000),
                                 hrv_ms=Decimal(str(round(rng.uniform(30, 90), 2))), hrv_method="rmssd",
                                 weight_kg=Decimal("70.00") if i % 5 == 0 else None))
    return conn


def test_the_sliding_baseline_band_equals_pulse_cores_baseline_on_every_day(store: sqlite3.Connection) -> None:
    history = SqliteEntryRepository(store).list("ana")
    for series in chart_series(history, START, END):
        for day, band in zip(series.days, series.bands, strict=True):
            method = "rmssd" if series.metric == "hrv_ms" else None
            expected = baseline(history, series.metric, day, method)
            if expected.sd is None:
                assert band is None, (series.metric, day)
            else:
                assert band is not None and expected.mean is not None
                assert band.mean == pytest.approx(expected.mean, rel=1e-9)
                assert band.sd == pytest.approx(expected.sd, rel=1e-6, abs=1e-6), (series.metric, day)


def test_hrv_charts_one_method_only() -> None:
    history = [_entry("a", START + dt.timedelta(days=i), hrv_ms=Decimal(50 + i),
                      hrv_method="sdnn" if i % 2 else "rmssd") for i in range(10)]
    hrv = next(s for s in chart_series(history, START, START + dt.timedelta(days=9)) if s.metric == "hrv_ms")
    assert [v is not None for v in hrv.values] == [i % 2 == 1 for i in range(10)]  # the latest is sdnn


def test_missing_days_are_gaps_in_the_chart_never_zero() -> None:
    days = [START + dt.timedelta(days=i) for i in range(5)]
    series = Series("steps", days, [1000.0, 2000.0, None, 4000.0, None], [None] * 5)
    geo = geometry(series)
    assert len(geo.lines) == 1 and len(geo.lines[0]) == 2  # days 0-1 joined, day 3 alone
    assert len(geo.markers) == 4 - 1  # days 0, 1, 3 (short series: every value marked)
    bottom = geo.plot[3]
    assert all(y < bottom for _, y in geo.markers)
    svg = chart_svg(Series("weight_kg", days, [None] * 5, [None] * 5), "ana")
    assert "no values in this range" in svg and "<polyline" not in svg


def test_a_band_reaching_below_zero_is_drawn_down_to_zero_only() -> None:
    days = [START + dt.timedelta(days=i) for i in range(3)]
    series = Series("steps", days, [100.0, 5000.0, 200.0], [None, Band(2000.0, 3000.0), Band(2000.0, 3000.0)])
    geo = geometry(series)
    bottom = geo.plot[3]
    assert all(y <= bottom for polygon in geo.bands for _, y in polygon)
    assert not any("-" in text for _, text in geo.y_labels)


def test_bands_need_two_values_in_the_28_days_before() -> None:
    days = [START + dt.timedelta(days=i) for i in range(40)]
    bands = trailing_bands({START: 10.0, START + dt.timedelta(days=1): 14.0}, days)
    assert bands[0] is None and bands[1] is None
    assert bands[2] is not None and (bands[2].mean, round(bands[2].sd, 6)) == (12.0, round(2 ** 0.5 * 2, 6))
    assert bands[28] is not None and bands[29] is None  # day 0 left the window on day 29


def test_the_roster_is_the_athletes_or_on_an_athletes_own_device_the_owner(store: sqlite3.Connection) -> None:
    assert roster(store) == {"ana": "ana", "bo": "bo"}
    SqliteEntryRepository(store).save(_entry("", END, steps=100))
    assert roster(store) == {"ana": "ana", "bo": "bo"}  # a coach's own rows stay out of the team
    store.execute("DELETE FROM entries WHERE user_id != ''")
    assert roster(store) == {"kim": ""}


def test_each_athlete_is_placed_by_the_zone_the_last_sync_kept_and_the_owner_by_this_device(
    store: sqlite3.Connection,
) -> None:
    store.executemany("INSERT INTO athlete_zones (username, utc_offset_min, fetched_at) VALUES (?, ?, 'then')",
                      [("ana", 14 * 60), ("bo", None)])
    evening = dt.datetime(2026, 4, 30, 20, 0, tzinfo=dt.UTC)  # 2026-05-01 10:00 for ana
    calendars = athlete_calendars(store, roster(store), evening, END)
    assert calendars == {"ana": Calendar(dt.date(2026, 5, 1), 840), "bo": Calendar(END, None)}
    rows = {r["athlete"]: r for r in athlete_rows(store, roster(store), calendars, None)}
    assert (rows["ana"]["as_of"], rows["ana"]["today"], rows["ana"]["calendar"]) == ("2026-05-01", "2026-05-01",
                                                                                       "athlete")
    assert (rows["bo"]["as_of"], rows["bo"]["utc_offset_min"], rows["bo"]["calendar"]) == ("2026-04-30", None, "coach")
    report = build_report(store, roster(store), calendars, None, None, False, "now")
    assert [(a.start, a.end) for a in report.athletes] == [(dt.date(2026, 4, 4), dt.date(2026, 5, 1)),
                                                          (dt.date(2026, 4, 3), END)]
    assert (report.start, report.end) == (dt.date(2026, 4, 3), dt.date(2026, 5, 1))  # the span of both
    markdown = str(render(report, "md"))
    assert "each evaluated as of their own last day (2026-04-30 to 2026-05-01" in markdown
    assert "in the athlete's calendar (UTC+14:00, where today is 2026-05-01)" in markdown
    assert "in this device's calendar (today 2026-04-30): the athlete's zone is not known here" in markdown
    # On an athlete's own device the owner's days are this device's, in its zone.
    store.execute("DELETE FROM entries WHERE user_id != ''")
    SqliteEntryRepository(store).save(_entry("", END, steps=100))
    assert athlete_calendars(store, roster(store), evening, END, -5 * 60) == {"kim": Calendar(END, -300)}


def test_a_range_not_yet_begun_for_one_athlete_renders_as_empty_in_every_format(store: sqlite3.Connection) -> None:
    """--from 2026-05-01 is ana's today in Kiritimati but still tomorrow for bo, whose zone is this device's."""
    store.execute("INSERT INTO athlete_zones (username, utc_offset_min, fetched_at) VALUES ('ana', 840, 'then')")
    calendars = athlete_calendars(store, roster(store), dt.datetime(2026, 4, 30, 20, 0, tzinfo=dt.UTC), END)
    day = dt.date(2026, 5, 1)
    report = build_report(store, roster(store), calendars, day, day, True, "2026-04-30T20:00:00Z")
    out = {fmt: render(report, fmt) for fmt in ("md", "csv", "json", "html", "pdf", "fhir")}
    bo = json.loads(str(out["json"]))["athletes"][1]
    assert (bo["from"], bo["to"], bo["days_in_range"], bo["days_logged"], bo["weeks"]) == \
        ("2026-05-01", "2026-04-30", 0, 0, [])
    assert "## bo\n\nCompliance: 0 of 0 days logged (0.0%)" in str(out["md"])
    assert isinstance(out["pdf"], bytes) and out["pdf"].startswith(b"%PDF")


def test_athletes_are_chosen_by_name_or_pattern_in_the_devices_order() -> None:
    available = ["fitbit-1", "fitbit-2", "welltory-a"]
    assert select_athletes(available, []) == available
    assert select_athletes(available, ["welltory-a", "fitbit-*", "fitbit-2"]) == available
    with pytest.raises(UsageError, match=r"athlete: 'x\*' matches no athlete on this device \(allowed one of 3:"):
        select_athletes(available, ["x*"])
    with pytest.raises(NotFoundError):
        select_athletes([], [])


def test_coach_athletes_rows_count_days_and_read_last_sync_from_the_newest_stamp(store: sqlite3.Connection) -> None:
    rows = {r["athlete"]: r for r in athlete_rows(store, roster(store), _calendars(store), END)}
    days = {r[0] for r in store.execute("SELECT date FROM entries WHERE user_id = 'ana'")}
    assert rows["ana"]["days_7"] == sum(1 for d in days if d > (END - dt.timedelta(days=7)).isoformat())
    assert rows["ana"]["days_28"] == sum(1 for d in days if d > (END - dt.timedelta(days=28)).isoformat())
    newest = max(int(r[0].split(":")[0]) for r in store.execute(
        "SELECT steps_hlc FROM entries WHERE user_id = 'ana'"))
    expected = dt.datetime.fromtimestamp(newest / 1000, dt.UTC).isoformat(timespec="seconds")
    assert rows["ana"]["last_sync"] == expected.replace("+00:00", "Z")
    assert rows["ana"]["open_flags"] == len(rows["ana"]["flags"])


def test_every_format_renders_a_small_team(store: sqlite3.Connection) -> None:
    report = build_report(store, roster(store), _calendars(store), START, END, True, "2026-05-01T00:00:00Z")
    out = {fmt: render(report, fmt) for fmt in ("md", "csv", "json", "html", "pdf")}
    assert isinstance(out["pdf"], bytes) and out["pdf"].startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page[^s]", out["pdf"])) >= 3
    data = json.loads(str(out["json"]))
    assert [a["athlete"] for a in data["athletes"]] == ["ana", "bo"] and len(data["team"]) == 2
    rows = str(out["csv"]).splitlines()
    logged = sum(a["days_logged"] for a in data["athletes"])
    # sleep, HRV, steps and the score every logged day; weight on some
    assert len(rows) - 1 == 4 * logged + sum(1 for r in rows if ",weight_kg," in r)
    assert str(out["html"]).count("<svg ") == 10 and str(out["md"]).count("\n## ") == 3


def test_markdown_cells_escape_pipes() -> None:
    assert table(("a", "b"), [("x|y", "1")])[-1] == "| x\\|y | 1 |"


def test_report_and_coach_help_have_examples() -> None:
    for command in (["report"], ["coach", "athletes"]):
        done = subprocess.run([str(PULSE), *command, "--help"], capture_output=True, text=True,
                              env=clean_env(PULSE_HOME="/nonexistent"), timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Examples:" in done.stdout and f"pulse {' '.join(command)}" in done.stdout
    done = subprocess.run([str(PULSE), "coach", "--help"], capture_output=True, text=True, env=clean_env(),
                          timeout=60)
    assert "athletes" in done.stdout


def test_pulse_log_and_help_load_no_report_code(tmp_path: Path) -> None:
    """Start-up stays as it was: the report package, rich and reportlab load only when a report is made."""
    code = (
        "import sys\n"
        "from pulse_cli.main import app\n"
        "for argv in (['--help'], ['log', '--steps', '8000', '--json']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pulse_cli.reports_render', 'reportlab', 'rich'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=clean_env(PULSE_HOME=str(tmp_path / "home")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_without_reportlab_a_pdf_is_one_clear_error(store: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    report = build_report(store, roster(store), _calendars(store), START, END, False, "now")
    monkeypatch.delitem(sys.modules, "pulse_cli.reports_render.pdf", raising=False)
    for name in [m for m in sys.modules if m == "reportlab" or m.startswith("reportlab.")] + ["reportlab"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UsageError, match=r"format: a PDF needs reportlab \(pip install 'reportlab>=4'\)"):
        render(report, "pdf")
    assert str(render(report, "md")).startswith("# NGX Pulse report")


@pytest.fixture
def long_store(tmp_path: Path) -> sqlite3.Connection:
    """Two years of three athletes: one who stopped long before the range, one whose HRV method changed
    before it, one whose last days were emptied by hand (kept as rows with no value)."""
    conn = open_store(tmp_path / "long")
    rng = random.Random(11)
    repo = SqliteEntryRepository(conn)
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for i in range(730):
            day = END - dt.timedelta(days=729 - i)
            if i < 500 and rng.random() < 0.8:
                repo.save(_entry("stopped", day, sleep_hours=Decimal("7.10"), steps=rng.randint(2000, 15000)))
            if rng.random() < 0.85:
                method = "sdnn" if i < 600 else "rmssd"
                hrv = Decimal(str(round(rng.uniform(30, 90), 2))) if i < 650 or i % 3 else None
                repo.save(_entry("switched", day, hrv_ms=hrv, hrv_method=method if hrv else None,
                                 sleep_hours=Decimal(str(round(rng.uniform(4.5, 9), 2))), steps=rng.randint(0, 9000),
                                 weight_kg=Decimal(str(round(rng.uniform(60, 62), 1))) if i % 4 == 0 else None))
            emptied = i >= 700
            repo.save(_entry("emptied", day, steps=None if emptied else rng.randint(0, 9000),
                             sleep_hours=None if emptied else Decimal("6.50")))
    return conn


@pytest.mark.parametrize(("start", "end"), [(dt.date(2026, 4, 1), END), (dt.date(2025, 5, 1), END),
                                            (dt.date(2025, 1, 1), dt.date(2025, 2, 15)), (END, END)])
def test_figures_and_charts_read_from_the_window_equal_those_of_the_whole_history(
    long_store: sqlite3.Connection, start: dt.date, end: dt.date
) -> None:
    """The report reads each athlete's rows from window_start on (and the latest before): every figure,
    flag, chart and listed row must be what pulse_core computes from everything the device holds."""
    later = {name: Calendar(dt.date(2100, 1, 1)) for name in roster(long_store)}  # every range ends on `end`
    report = build_report(long_store, roster(long_store), later, start, end, True, "now")
    repo = SqliteEntryRepository(long_store)
    for figures in report.athletes:
        history = repo.list(figures.athlete, None, end)
        expected = athlete_report(figures.athlete, history, start, end)
        expected.calendar = later[figures.athlete]
        assert figures.as_json() == expected.as_json()
        # every value and its source (the report reads no stamps)
        assert [e.as_json() for e in report.rows(figures.athlete)] == [e.as_json() for e in expected.entries]
        assert report.series(figures.athlete) == chart_series([e for e in history if not e.is_empty()], start, end)
    for row in athlete_rows(long_store, roster(long_store), later, end):
        live = [e for e in repo.list(row["athlete"], None, end) if not e.is_empty()]
        assert row["last_entry"] == max(e.date for e in live).isoformat()
        assert row["flags"] == [f.as_json() for f in flags(live, end)]
        assert row["days_28"] == sum(1 for e in live if (end - e.date).days < 28)


def test_the_window_reaches_back_for_the_bands_and_the_hrv_flag() -> None:
    assert window_start(dt.date(2026, 4, 1), dt.date(2026, 4, 30)) == dt.date(2026, 3, 4)  # 28 days before
    assert window_start(dt.date(2026, 4, 30), dt.date(2026, 4, 30)) == dt.date(2026, 3, 27)  # 6 + 28 days before
