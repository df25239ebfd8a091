"""The report as a coach sees it: the HTML page in Chromium, the PDF's pages as images, the Markdown as
a viewer renders it. The images are kept in tests/artefacts/reports/ (tests/artefacts.py) for a person
to look at; the tests check what can be measured on them.

The athlete is fitbit-4020332650 over the Fitbit month: 17 days logged and nothing in 2016-W17 (the raw
files' gap week, tests/data/fitbit), with the team roll-up, the way `pulse report --team --athlete X`
makes it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from artefacts import artefact_dir
from markdown_it import MarkdownIt
from playwright.sync_api import Browser, Page
from report_support import Pulse

ATHLETE = "fitbit-4020332650"
GAP_WEEK = "2016-W17"
MONTH = ("--from", "2016-04-12", "--to", "2016-05-12")
INK = 160  # a grey level (0 black, 255 white) darker than this is ink: text, lines, the charts


@pytest.fixture(scope="module")
def athlete_files(coach_device: Pulse, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("athlete-report")
    files = {}
    for fmt in ("md", "html", "pdf"):
        files[fmt] = folder / f"{ATHLETE}.{fmt}"
        coach_device.ok("report", "--team", "--athlete", ATHLETE, *MONTH, "--format", fmt, "-o", str(files[fmt]))
    return files


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)  # needs nothing outside
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert errors == []


# -- PDF pages ------------------------------------------------------------------------------------------
def pdf_pages(pdf: Path, keep_as: str) -> list[list[bytes]]:
    """Each page as rows of grey levels (pdftoppm at 40 dpi), and each page kept as a PNG at 80 dpi."""
    keep = artefact_dir("reports")
    for old in keep.glob(f"{keep_as}-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-r", "80", "-png", str(pdf), str(keep / keep_as)], check=True)
    grey = pdf.with_suffix("")
    subprocess.run(["pdftoppm", "-r", "40", "-gray", str(pdf), str(grey)], check=True)
    pages = []
    for path in sorted(grey.parent.glob(f"{grey.name}-*.pgm")):
        pages.append(_pgm_rows(path.read_bytes()))
        path.unlink()
    return pages


def _pgm_rows(data: bytes) -> list[bytes]:
    """The rows of a binary PGM (P5, 8 bits): the header is 'P5', width, height, maxval, then the pixels."""
    fields, rest = data.split(maxsplit=4)[:4], data.split(maxsplit=4)[4]
    assert fields[0] == b"P5" and fields[3] == b"255"
    width, height = int(fields[1]), int(fields[2])
    return [rest[y * width:(y + 1) * width] for y in range(height)]


def ink_reaches(rows: list[bytes]) -> float:
    """How far down the page the lowest ink is, as a fraction of its height."""
    inked = [y for y, row in enumerate(rows) if min(row) < INK]
    return (inked[-1] + 1) / len(rows) if inked else 0.0


def test_a_one_athlete_pdf_fills_its_first_page(athlete_files: dict[str, Path]) -> None:
    pages = pdf_pages(athlete_files["pdf"], "athlete-pdf-page")
    assert 1 <= len(pages) <= 2
    # A4 with 14 mm margins: ink can reach 95% of the height; the page 1 stopped at about 20%.
    assert ink_reaches(pages[0]) > 0.75, ink_reaches(pages[0])


def test_no_page_of_the_team_pdf_but_the_last_is_mostly_blank(team_files: dict[str, Path]) -> None:
    pages = pdf_pages(team_files["pdf"], "team-pdf-page")
    assert len(pages) >= 33  # each athlete's section is most of a page for a month
    reached = [ink_reaches(rows) for rows in pages[:-1]]
    assert min(reached) > 0.5, [round(r, 2) for r in reached]


# -- the HTML page ----------------------------------------------------------------------------------
# Per chart: its box, and every drawn point, line and label that is not wholly inside it.
_OUTSIDE = """() => [...document.querySelectorAll('svg.chart')].map((svg) => {
  const box = svg.getBoundingClientRect();
  const frame = svg.querySelector('rect').getBoundingClientRect();
  const inside = (r, b) => r.left >= b.left && r.right <= b.right && r.top >= b.top && r.bottom <= b.bottom;
  const out = [];
  for (const el of svg.querySelectorAll('circle, polyline, polygon')) {
    if (!inside(el.getBoundingClientRect(), frame)) out.push(el.outerHTML.slice(0, 80));
  }
  for (const el of svg.querySelectorAll('text')) if (!inside(el.getBoundingClientRect(), box)) out.push(el.textContent);
  return { metric: svg.dataset.metric, out, empty: svg.textContent.includes('no values in this range'),
           y: [...svg.querySelectorAll('text.y')].map((t) => t.textContent),
           x: [...svg.querySelectorAll('text.x')].map((t) => t.textContent) };
})"""


def _round_labels(labels: list[str]) -> bool:
    """Evenly spaced multiples of 1, 2, 2.5 or 5 x 10^k."""
    numbers = [float(t.replace(",", "")) for t in labels]
    steps = {round(b - a, 6) for a, b in itertools.pairwise(numbers)}
    if len(steps) != 1:
        return False
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5)) and all(
        math.isclose(n / step, round(n / step), abs_tol=1e-6) for n in numbers)


def test_the_html_charts_have_round_ticks_dated_mondays_and_nothing_cut(
    athlete_files: dict[str, Path], page: Page
) -> None:
    page.goto(athlete_files["html"].as_uri())
    page.screenshot(path=artefact_dir("reports") / "athlete-html.png", full_page=True)
    charts: list[dict[str, Any]] = page.evaluate(_OUTSIDE)
    assert [c["metric"] for c in charts] == ["sleep_hours", "hrv_ms", "steps", "weight_kg", "score"]
    # Fitbit has no HRV, and this athlete logged no weight: those two charts say so and have no axes.
    assert [c["metric"] for c in charts if c["empty"]] == ["hrv_ms", "weight_kg"]
    for chart in charts:
        assert chart["out"] == [], chart
        if chart["empty"]:
            assert chart["y"] == [] and chart["x"] == []
            continue
        assert len(chart["y"]) >= 3 and _round_labels(chart["y"]), chart
        assert chart["x"] == ["2016-04-18", "04-25", "05-02", "05-09"]  # the month's Mondays
    for label in ("2016-04-18", "2016-04-25", "2016-05-02", "2016-05-09"):
        assert dt.date.fromisoformat(label).weekday() == 0


def test_the_html_weekly_table_marks_the_week_with_no_entry(athlete_files: dict[str, Path], page: Page) -> None:
    page.goto(athlete_files["html"].as_uri())
    weeks = page.locator("table.weeks tbody tr")
    assert weeks.locator("td:first-child").all_inner_texts() == [f"2016-W{w}" for w in range(15, 20)]
    gap = page.locator("table.weeks tr.gap")
    assert gap.locator("td").all_inner_texts() == [GAP_WEEK, "2016-04-25", "0 of 7", "–", "–", "–", "–", "–"]
    colour = gap.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    assert colour != "rgba(0, 0, 0, 0)"  # shaded, not only listed
    weeks.last.screenshot(path=artefact_dir("reports") / "athlete-html-last-week.png")


def test_the_team_html_page_is_kept_as_an_image(team_files: dict[str, Path], page: Page) -> None:
    page.goto(team_files["html"].as_uri())
    page.screenshot(path=artefact_dir("reports") / "team-html-top.png")
    page.locator("section.athlete").first.screenshot(path=artefact_dir("reports") / "team-html-first-athlete.png")
    charts: list[dict[str, Any]] = page.evaluate(_OUTSIDE)
    assert len(charts) == 33 * 5 and all(c["out"] == [] for c in charts)


# -- Markdown as a viewer shows it -------------------------------------------------------------------
def test_the_markdown_renders_as_tables_with_the_gap_week_in_bold(
    athlete_files: dict[str, Path], page: Page, tmp_path: Path
) -> None:
    html = MarkdownIt("commonmark").enable("table").render(athlete_files["md"].read_text())
    style = ("<style>body{font:14px system-ui,sans-serif;margin:24px}table{border-collapse:collapse}"
             "th,td{border:1px solid #d0d7de;padding:3px 8px}</style>")
    rendered = tmp_path / "report-md.html"
    rendered.write_text(f"<!DOCTYPE html><html lang='en'><meta charset='utf-8'>{style}<body>{html}</body></html>")
    page.goto(rendered.as_uri())
    page.screenshot(path=artefact_dir("reports") / "athlete-markdown.png", full_page=True)
    weekly = page.locator("table").last
    assert weekly.locator("tbody tr").count() == 5
    row = weekly.locator("tbody tr", has_text=GAP_WEEK)
    assert row.locator("strong").inner_text() == "0 of 7"
    assert page.get_by_text("1 week with no entry (in bold).").count() == 1
