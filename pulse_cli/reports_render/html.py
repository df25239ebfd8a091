"""The report as one self-contained HTML page: inline CSS and SVG charts, no JavaScript, no network."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from pulse_cli.reports_render.model import TeamReport
from pulse_cli.reports_render.svg import chart_svg
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

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; margin: 24px;
       max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 6px; border-top: 1px solid #e5e7eb;
     padding-top: 16px; } h3 { font-size: 14px; margin: 14px 0 6px; }
p.meta { color: #4b5563; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 4px 0 10px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e5e7eb; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
th { background: #f9fafb; font-weight: 600; }
td.flagged { color: #b91c1c; font-weight: 600; }
tr.gap td { background: #fef2f2; color: #991b1b; } tr.gap td:nth-child(3) { font-weight: 600; }
ul.flags li { margin: 2px 0; } code { background: #fef2f2; color: #991b1b; padding: 0 4px; border-radius: 3px; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 16px; }
svg.chart { background: #fff; }
nav a { margin-right: 8px; }
"""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], text_from: int | None = None) -> str:
    """A table whose first column (and every column from `text_from` on) is text, the rest numbers."""

    def cell(tag: str, i: int, value: str) -> str:
        css = ' class="text"' if text_from is not None and i >= text_from else ""
        return f"<{tag}{css}>{escape(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: TeamReport) -> str:
    title = f"NGX Pulse report: {report.start.isoformat()} to {report.end.isoformat()}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{athletes_count(len(report.athletes))}, {escape(as_of_text(report))}; generated'
        f" {escape(report.generated_at)}. Averages are over the days that have a value; missing days are gaps,"
        " never zero. Charts: each day's value, with the band of mean ± SD of the 28 days before it.</p>",
    ]
    if report.team:
        parts += ['<section id="team"><h2>Team</h2><p class="meta">Sorted by open flags, most first.</p>']
        rows = [(str(r["athlete"]), str(r["flags"]), ", ".join(r["flag_codes"]) or "–", percent(r["compliance"]),
                 str(r["last_entry"] or "–"), number("score", r["score_7d"])) for r in report.rollup]
        parts.append(_team_table(rows))
        parts.append("</section>")
    for athlete in report.athletes:
        parts.append(athlete_section(report, athlete))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _team_table(rows: Sequence[Sequence[str]]) -> str:
    headers = ("Athlete", "Open flags", "Flags", "Compliance", "Last entry", "Score 7-day avg")
    body = []
    for row in rows:
        anchor = f'<a href="#{_anchor(row[0])}">{escape(row[0])}</a>'
        flagged = ' class="flagged"' if row[1] != "0" else ""
        cells = [f"<td>{anchor}</td>", f"<td{flagged}>{escape(row[1])}</td>", f'<td class="text">{escape(row[2])}</td>',
                 *(f"<td>{escape(v)}</td>" for v in row[3:])]
        body.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f'<th class="text">{escape(h)}</th>' if h == "Flags" else f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _weeks_table(a: AthleteReport) -> str:
    """Every week of the range; one with no entry is a row of its own, marked (the gap a coach looks for)."""
    headers = ("Week", "Starts", "Days logged", *(label(m) for m in TREND_METRICS))
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for w in a.weeks:
        cells = (w.week, w.start.isoformat(), week_days(w), *(number(m, w.means.get(m)) for m in TREND_METRICS))
        css = ' class="gap"' if not w.days_logged else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{escape(v)}</td>" for v in cells) + "</tr>")
    gaps = sum(1 for w in a.weeks if not w.days_logged)
    note = f'<p class="meta">{gaps} {"week" if gaps == 1 else "weeks"} with no entry (marked).</p>' if gaps else ""
    return f'<table class="weeks"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}'


def _anchor(name: str) -> str:
    return "athlete-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def athlete_section(report: TeamReport, a: AthleteReport) -> str:
    last = a.last_entry.isoformat() if a.last_entry else "never"
    parts = [
        f'<section class="athlete" id="{_anchor(a.athlete)}"><h2>{escape(a.athlete)}</h2>',
        f'<p class="meta">Compliance: {a.days_logged} of {a.days_in_range} days logged'
        f" ({percent(a.compliance)}); last entry {last}. {escape(calendar_text(a))}</p>",
    ]
    readiness = {item["metric"]: readiness_text(item) for item in a.readiness.values()}
    parts.append(_table(
        ("Metric", "Mean over the range", "7-day avg", "28-day avg", f"Readiness on {a.end.isoformat()}"),
        [(label(m), number(m, a.range_means.get(m)), number(m, a.rolling_7.get(m)), number(m, a.rolling_28.get(m)),
          readiness.get(m, "")) for m in TREND_METRICS],
        text_from=4,
    ))
    parts.append("<h3>Open flags</h3>")
    if a.flags:
        items = "".join(f"<li><code>{escape(f.code)}</code> {escape(f.message)}"
                        f" <small>({escape(flag_numbers(f.numbers))})</small></li>" for f in a.flags)
        parts.append(f'<ul class="flags">{items}</ul>')
    else:
        parts.append("<p>None.</p>")
    parts.append("<h3>Weekly</h3>")
    parts.append(_weeks_table(a) if a.weeks else "<p>No days in this range.</p>")
    parts.append('<h3>Charts</h3><div class="charts">')
    parts.extend(chart_svg(series, a.athlete) for series in report.series(a.athlete))
    parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)
