"""The report as a PDF, made with reportlab (works offline). Imported only for `--format pdf`.

The same sections as the HTML page: the team roll-up, then per athlete the figures, open flags,
charts (the geometry of `svg`, drawn straight on reportlab's canvas) and the weekly table.

What it costs follows the pages, not the team: each athlete's flowables are made only when the layout
reaches them (and dropped once drawn), so one athlete's rows and charts are in memory at a time. A
chart is drawn with the canvas's own path operators: reportlab's graphics shapes validated every
attribute of every point, most of the time of a team's year (bench/data_scale.py has the figures).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from xml.sax.saxutils import escape

# Typed when types-reportlab is installed, untyped (and still checked everywhere else) when not.
from reportlab.lib import colors  # type: ignore[import-untyped, unused-ignore]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped, unused-ignore]
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # type: ignore[import-untyped, unused-ignore]
from reportlab.lib.units import mm  # type: ignore[import-untyped, unused-ignore]
from reportlab.platypus import (  # type: ignore[import-untyped, unused-ignore]
    CondPageBreak,
    Flowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.flowables import NullDraw  # type: ignore[import-untyped, unused-ignore]

from pulse_cli.reports_render import svg
from pulse_cli.reports_render.model import Series, TeamReport
from pulse_cli.reports_render.text import (
    as_of_text,
    athletes_count,
    calendar_text,
    flag_numbers,
    label,
    number,
    percent,
    readiness_text,
    week_days,
)
from pulse_core.insights import TREND_METRICS
from pulse_core.reports import AthleteReport

CHART_W, CHART_H = 250.0, 108.0
CHART_FONT = 6.5
WEEKS_WITH_HEAD = 8  # an athlete starts where their head and this many weeks fit, else on a new page
TABLE_STYLE = TableStyle([
    ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
    ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f3f4f6")),
    ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d1d5db")),
    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
    ("TOPPADDING", (0, 0), (-1, -1), 1.5),
    ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
])


def render_pdf(report: TeamReport) -> bytes:
    out = io.BytesIO()
    title = f"NGX Pulse report: {report.start.isoformat()} to {report.end.isoformat()}"
    doc = _Document(out, pagesize=A4, leftMargin=14 * mm, rightMargin=14 * mm, topMargin=14 * mm,
                            bottomMargin=14 * mm, title=title, author="NGX Pulse", creator="pulse report")
    styles = getSampleStyleSheet()
    small = ParagraphStyle("small", parent=styles["BodyText"], fontSize=8, leading=10)
    story: list[Any] = [
        Paragraph(escape(title), styles["Title"]),
        Paragraph(escape(f"{athletes_count(len(report.athletes))}, {as_of_text(report)}; generated"
                         f" {report.generated_at}. Averages are over the days that have a value; missing days are"
                         " gaps, never zero. Charts: each day's value with the band of mean ± SD of the 28 days"
                         " before it."), small),
        Spacer(1, 6),
    ]
    if report.team:
        story.append(Paragraph("Team (sorted by open flags, most first)", styles["Heading2"]))
        rows = [(r["athlete"], str(r["flags"]), ", ".join(r["flag_codes"]) or "–", percent(r["compliance"]),
                 r["last_entry"] or "–", number("score", r["score_7d"])) for r in report.rollup]
        story.append(_table(("Athlete", "Open flags", "Flags", "Compliance", "Last entry", "Score 7-day avg"), rows,
                            text=(2,)))
    for athlete in report.athletes:
        story.append(_Later(partial(_athlete, report, athlete, doc.width, styles, small)))
    doc.build(story)
    return out.getvalue()


class _Later(NullDraw):  # type: ignore[misc]
    """Stands in the story for flowables made only when the layout reaches it (an athlete's section)."""

    def __init__(self, make: Callable[[], list[Any]]) -> None:
        super().__init__()
        self.make = make


class _Document(SimpleDocTemplate):  # type: ignore[misc]
    def filterFlowables(self, flowables: list[Any]) -> None:
        """reportlab's hook before each flowable is laid out: put a section's flowables in its place."""
        while flowables and isinstance(flowables[0], _Later):
            flowables[0:1] = flowables[0].make()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[int] = ()) -> Table:
    """The first column and the `text` columns left-aligned, the numbers right."""
    table = Table([list(headers), *[list(r) for r in rows]], repeatRows=1, hAlign="LEFT")
    table.setStyle(TABLE_STYLE)
    table.setStyle(TableStyle([("ALIGN", (col, 0), (col, -1), "LEFT") for col in text]))
    return table


def _athlete(report: TeamReport, a: AthleteReport, width: float, styles: Any, small: ParagraphStyle
             ) -> list[Any]:
    """An athlete's section: name, figures, flags and the weekly table (the gaps a coach looks for), then
    the charts, two a row. It starts on the page in progress when its head and weekly table (their first
    WEEKS_WITH_HEAD weeks, for a long range) fit there, else on the next page; the weekly table is split
    between pages by rows, its header repeated, and each chart row follows where it fits. So no page is
    left mostly blank, and a name is never alone at the foot of a page."""
    last = a.last_entry.isoformat() if a.last_entry else "never"
    readiness = {item["metric"]: readiness_text(item) for item in a.readiness.values()}
    heading = ParagraphStyle("section", parent=styles["Heading4"], spaceBefore=8, spaceAfter=3)
    head: list[Any] = [
        Paragraph(escape(a.athlete), styles["Heading2"]),
        Paragraph(escape(f"Compliance: {a.days_logged} of {a.days_in_range} days logged ({percent(a.compliance)});"
                         f" last entry {last}. {calendar_text(a)}"), small),
        Spacer(1, 4),
        _table(("Metric", "Mean over the range", "7-day avg", "28-day avg", f"Readiness on {a.end.isoformat()}"),
               [(label(m), number(m, a.range_means.get(m)), number(m, a.rolling_7.get(m)),
                 number(m, a.rolling_28.get(m)), readiness.get(m, "")) for m in TREND_METRICS], text=(4,)),
        Paragraph("Open flags", heading),
    ]
    if a.flags:
        head.extend(Paragraph(f"<b>{escape(f.code)}</b> {escape(f.message)}"
                              f" <i>({escape(flag_numbers(f.numbers))})</i>", small) for f in a.flags)
    else:
        head.append(Paragraph("None.", small))
    head.append(Paragraph("Weekly", heading))
    weeks = _weeks_table(a) if a.weeks else Paragraph("No days in this range.", small)
    needed = _height(head, width) + _height([weeks], width, rows=WEEKS_WITH_HEAD + 1)
    charts = [Chart(s) for s in report.series(a.athlete)]
    rows = [_chart_row(charts[i:i + 2]) for i in range(0, len(charts), 2)]
    first_row = _height([Paragraph("Charts", heading), *rows[:1]], width)
    return [Spacer(1, 10), CondPageBreak(needed), *head, weeks, CondPageBreak(first_row), Paragraph("Charts", heading),
            *rows]


def _height(flowables: list[Any], width: float, rows: int | None = None) -> float:
    """What the flowables take down the page at this width (a table's first `rows` rows only, when given),
    spaces between them included."""
    total = 0.0
    for f in flowables:
        _, h = f.wrap(width, 1e6)
        if rows is not None and isinstance(f, Table):
            h = sum(f._rowHeights[:rows])
        total += h + f.getSpaceBefore() + f.getSpaceAfter()
    return total


def _chart_row(charts: list[Chart]) -> Table:
    row = Table([charts + [""] * (2 - len(charts))], colWidths=[CHART_W + 7] * 2, hAlign="LEFT")
    row.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (-1, -1), 7),
                             ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
    return row


def _weeks_table(a: AthleteReport) -> Table:
    """Every week of the range; a week with no entry is marked (the gap a coach looks for)."""
    table = _table(("Week", "Starts", "Days logged", *(label(m) for m in TREND_METRICS)),
                   [(w.week, w.start.isoformat(), week_days(w), *(number(m, w.means.get(m)) for m in TREND_METRICS))
                    for w in a.weeks])
    gaps = [i + 1 for i, w in enumerate(a.weeks) if not w.days_logged]  # + 1: the header row
    table.setStyle(TableStyle([style for row in gaps for style in (
        ("BACKGROUND", (0, row), (-1, row), colors.HexColor("#fef2f2")),
        ("TEXTCOLOR", (0, row), (-1, row), colors.HexColor("#991b1b")),
        ("FONT", (2, row), (2, row), "Helvetica-Bold", 7.5),
    )]))
    return table


class Chart(Flowable):  # type: ignore[misc]
    """One chart (the geometry of `svg`), drawn with the canvas's path operators."""

    def __init__(self, series: Series) -> None:
        super().__init__()
        self.series = series
        self.width, self.height = CHART_W, CHART_H

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        canvas = self.canv
        geo = svg.geometry(self.series, CHART_W, CHART_H, font=CHART_FONT)
        h = geo.height
        left, top, right, bottom = geo.plot
        ink = colors.HexColor(svg.INK)
        canvas.setFont("Helvetica-Bold", 8)
        canvas.setFillColor(ink)
        canvas.drawString(2, h - 12, geo.title)
        canvas.setLineWidth(0.5)
        canvas.setStrokeColor(colors.HexColor(svg.GRID))
        for y, _ in geo.y_labels:
            canvas.line(left, h - y, right, h - y)
        canvas.setStrokeColor(colors.HexColor(svg.FRAME))
        for x in geo.x_ticks:
            canvas.line(x, h - bottom, x, h - bottom - 3)
        canvas.rect(left, h - bottom, right - left, bottom - top, stroke=1, fill=0)
        canvas.setFont("Helvetica", 7)
        if not self.series.has_values:
            canvas.drawCentredString((left + right) / 2, h - (top + bottom) / 2, "no values in this range")
        canvas.saveState()
        canvas.setFillColor(colors.Color(0.576, 0.773, 0.992, alpha=0.45))
        for polygon in geo.bands:
            canvas.addLiteral(_path(polygon, h, close=True) + " f*")  # fill (even-odd, as reportlab's default)
        canvas.restoreState()
        canvas.saveState()
        canvas.setStrokeColor(colors.HexColor(svg.MEAN))
        canvas.setLineWidth(0.6)
        canvas.setDash([2, 2])
        for mean in geo.means:
            canvas.addLiteral(_path(mean, h) + " S")  # stroke
        canvas.restoreState()
        canvas.setStrokeColor(colors.HexColor(svg.LINE))
        canvas.setLineWidth(1)
        for line in geo.lines:
            canvas.addLiteral(_path(line, h) + " S")
        canvas.setFillColor(colors.HexColor(svg.LINE))
        for x, y in geo.markers:
            canvas.circle(x, h - y, 1.4, stroke=0, fill=1)
        canvas.setFont("Helvetica", CHART_FONT)
        canvas.setFillColor(ink)
        for y, text in geo.y_labels:
            canvas.drawRightString(left - 3, h - y - 2.3, text)
        draw = {"start": canvas.drawString, "middle": canvas.drawCentredString, "end": canvas.drawRightString}
        for x, text, anchor in geo.x_labels:
            draw[anchor](x, h - bottom - 10, text)


def _path(points: list[tuple[float, float]], height: float, close: bool = False) -> str:
    """A path through the points in PDF operators, as reportlab's path object writes them (`n`, a move,
    lines, `h` to close), to 0.01 pt, made in one pass: reportlab's object costs a method call and a
    number formatting a point, the most of a year's chart. (y grows downwards in the geometry.)"""
    (x, y), rest = points[0], points[1:]
    lines = " ".join([f"{x:.2f} {height - y:.2f} l" for x, y in rest])
    return f"n {x:.2f} {height - y:.2f} m {lines}{' h' if close else ''}"
