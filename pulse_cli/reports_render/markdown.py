"""The report as a Markdown document: the team roll-up, then each athlete's figures, flags and weeks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pulse_cli.reports_render.model import TeamReport
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


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], right_from: int = 1, text: Sequence[int] = ()
) -> list[str]:
    """A pipe table: columns before `right_from` and the `text` ones left-aligned, the numbers right."""
    align = ["---" if i < right_from or i in text else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines.extend("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)
    return lines


def render_markdown(report: TeamReport) -> str:
    lines = [
        f"# NGX Pulse report: {report.start.isoformat()} to {report.end.isoformat()}",
        "",
        f"{athletes_count(len(report.athletes))}, {as_of_text(report)}; generated"
        f" {report.generated_at}. Averages are over the days that have a value; missing days are never zero.",
        "",
    ]
    if report.team:
        lines += ["## Team", "", "Sorted by open flags, most first.", ""]
        lines += table(
            ("Athlete", "Open flags", "Flags", "Compliance", "Last entry", "Score 7-day avg"),
            ((r["athlete"], r["flags"], ", ".join(r["flag_codes"]) or "–", percent(r["compliance"]),
              r["last_entry"] or "–", number("score", r["score_7d"])) for r in report.rollup),
            text=(2,),
        )
        lines.append("")
    for athlete in report.athletes:
        lines += athlete_section(athlete)
    return "\n".join(lines) + "\n"


def athlete_section(a: AthleteReport) -> list[str]:
    lines = [
        f"## {a.athlete}",
        "",
        f"Compliance: {a.days_logged} of {a.days_in_range} days logged ({percent(a.compliance)});"
        f" last entry {a.last_entry.isoformat() if a.last_entry else 'never'}. {calendar_text(a)}",
        "",
    ]
    readiness = {item["metric"]: readiness_text(item) for item in a.readiness.values()}
    lines += table(
        ("Metric", "Mean over the range", "7-day avg", "28-day avg", f"Readiness on {a.end.isoformat()}"),
        ((label(m), number(m, a.range_means.get(m)), number(m, a.rolling_7.get(m)), number(m, a.rolling_28.get(m)),
          readiness.get(m, "")) for m in TREND_METRICS),
        text=(4,),
    )
    lines += ["", "**Open flags**", ""]
    if a.flags:
        lines += [f"- `{f.code}`: {f.message} ({flag_numbers(f.numbers)})" for f in a.flags]
    else:
        lines.append("None.")
    lines += ["", "**Weekly**", ""]
    if a.weeks:
        lines += table(
            ("Week", "Starts", "Days logged", *(label(m) for m in TREND_METRICS)),
            ((w.week, w.start.isoformat(), week_days(w) if w.days_logged else f"**{week_days(w)}**",
              *(number(m, w.means.get(m)) for m in TREND_METRICS)) for w in a.weeks),
            right_from=2,
        )
        gaps = sum(1 for w in a.weeks if not w.days_logged)
        if gaps:
            lines += ["", f"{gaps} {'week' if gaps == 1 else 'weeks'} with no entry (in bold)."]
    else:
        lines.append("No days in this range.")
    lines.append("")
    return lines
