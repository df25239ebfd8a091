"""The report as a PDF, made with reportlab (works offline). Imported only for `--format pdf`.

The same sections as the HTML page: the team roll-up, then per athlete the figures, open flags,
charts (the geometry of `svg`, drawn with reportlab's graphics) and the weekly table.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

# Typed when types-reportlab is installed, untyped (and still checked everywhere else) when not.
from reportlab.graphics.shapes import (  # type: ignore[import-untyped, unused-ignore]
    Circle,
    Drawing,
    Polygon,
    PolyLine,
    Rect,
    String,
)
from reportlab.lib import colors  # type: ignore[import-untyped, unused-ignore]
from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped, unused-ignore]
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet  # type: ignore[import-untyped, unused-ignore]
from reportlab.lib.units import mm  # type: ignore[import-untyped, unused-ignore]
from reportlab.platypus import (  # type: ignore[import-untyped, unused-ignore]
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

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
)
from pulse_core.insights import TREND_METRICS
from pulse_core.reports import AthleteReport

CHART_W, CHART_H = 250.0, 112.0
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
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=14 * mm, rightMargin=14 * mm, topMargin=14 * mm,
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
    for i, athlete in enumerate(report.athletes):
        if i or report.team:
            story.append(PageBreak())
        story.extend(_athlete(report, athlete, styles, small))
    doc.build(story)
    return out.getvalue()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[int] = ()) -> Table:
    """The first column and the `text` columns left-aligned, the numbers right."""
    table = Table([list(headers), *[list(r) for r in rows]], repeatRows=1, hAlign="LEFT")
    table.setStyle(TABLE_STYLE)
    table.setStyle(TableStyle([("ALIGN", (col, 0), (col, -1), "LEFT") for col in text]))
    return table


def _athlete(report: TeamReport, a: AthleteReport, styles: Any, small: ParagraphStyle) -> list[Any]:
    last = a.last_entry.isoformat() if a.last_entry else "never"
    readiness = {item["metric"]: readiness_text(item) for item in a.readiness.values()}
    parts: list[Any] = [
        Paragraph(escape(a.athlete), styles["Heading2"]),
        Paragraph(escape(f"Compliance: {a.days_logged} of {a.days_in_range} days logged ({percent(a.compliance)});"
                         f" last entry {last}. {calendar_text(a)}"), small),
        Spacer(1, 4),
        _table(("Metric", "Mean over the range", "7-day avg", "28-day avg", f"Readiness on {a.end.isoformat()}"),
               [(label(m), number(m, a.range_means.get(m)), number(m, a.rolling_7.get(m)),
                 number(m, a.rolling_28.get(m)), readiness.get(m, "")) for m in TREND_METRICS], text=(4,)),
        Paragraph("Open flags", styles["Heading4"]),
    ]
    if a.flags:
        parts.extend(Paragraph(f"<b>{escape(f.code)}</b> {escape(f.message)}"
                               f" <i>({escape(flag_numbers(f.numbers))})</i>", small) for f in a.flags)
    else:
        parts.append(Paragraph("None.", small))
    charts = [_drawing(s) for s in report.series(a.athlete)]
    grid = [charts[i:i + 2] + [""] * (2 - len(charts[i:i + 2])) for i in range(0, len(charts), 2)]
    parts += [Paragraph("Charts", styles["Heading4"]), Table(grid, hAlign="LEFT")]
    parts.append(Paragraph("Weekly", styles["Heading4"]))
    if a.weeks:
        parts.append(_table(("Week", "Starts", "Days", *(label(m) for m in TREND_METRICS)),
                            [(w.week, w.start.isoformat(), str(w.days_logged),
                              *(number(m, w.means.get(m)) for m in TREND_METRICS)) for w in a.weeks]))
    else:
        parts.append(Paragraph("No entries in this range.", small))
    return [KeepTogether(parts[:5]), *parts[5:]]


def _drawing(series: Series) -> Drawing:
    geo = svg.geometry(series, CHART_W, CHART_H)
    h = geo.height
    drawing = Drawing(geo.width, geo.height)

    def flip(points: list[tuple[float, float]]) -> list[float]:
        return [c for x, y in points for c in (x, h - y)]

    left, top, right, bottom = geo.plot
    drawing.add(String(2, h - 12, geo.title, fontName="Helvetica-Bold", fontSize=8, fillColor=colors.HexColor(svg.INK)))
    frame = Rect(left, h - bottom, right - left, bottom - top)
    frame.fillColor, frame.strokeColor, frame.strokeWidth = None, colors.HexColor(svg.GRID), 0.5
    drawing.add(frame)
    if not series.has_values:
        drawing.add(String((left + right) / 2, h - (top + bottom) / 2, "no values in this range", fontSize=7,
                           textAnchor="middle", fillColor=colors.HexColor(svg.INK)))
    band = colors.Color(0.576, 0.773, 0.992, alpha=0.45)
    for polygon in geo.bands:
        drawing.add(Polygon(flip(polygon), fillColor=band, strokeColor=None, strokeWidth=0))
    for mean in geo.means:
        drawing.add(PolyLine(flip(mean), strokeColor=colors.HexColor(svg.MEAN), strokeWidth=0.6,
                             strokeDashArray=[2, 2]))
    for line in geo.lines:
        drawing.add(PolyLine(flip(line), strokeColor=colors.HexColor(svg.LINE), strokeWidth=1))
    for x, y in geo.markers:
        drawing.add(Circle(x, h - y, 1.4, fillColor=colors.HexColor(svg.LINE), strokeColor=None))
    for y, text in geo.y_labels:
        drawing.add(String(left - 3, h - y - 2.5, text, fontSize=6.5, textAnchor="end",
                           fillColor=colors.HexColor(svg.INK)))
    for x, text, anchor in geo.x_labels:
        drawing.add(String(x, 4, text, fontSize=6.5, textAnchor=anchor, fillColor=colors.HexColor(svg.INK)))
    return drawing
