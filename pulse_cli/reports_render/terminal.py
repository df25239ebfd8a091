"""The rich summary a report shows in a terminal, and the coach's athlete list."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
    zone_label,
)
from pulse_core.insights import TREND_METRICS
from pulse_core.reports import AthleteReport

DETAIL_UP_TO = 3  # athletes shown in full; past that, the roll-up and the flags only


def summary(report: TeamReport, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(f"[bold]NGX Pulse report[/bold] {report.start.isoformat()} to {report.end.isoformat()}:"
                  f" {athletes_count(len(report.athletes))}, {as_of_text(report)}")
    by_name = {a.athlete: a for a in report.athletes}
    table = Table(title="Team, most open flags first" if report.team else None)
    for header in ("Athlete", "Flags", "Compliance", "Last entry", "Sleep 7d", "HRV 7d", "Steps 7d", "Score 7d"):
        table.add_column(header, justify="left" if header in ("Athlete", "Flags") else "right", no_wrap=True)
    for row in report.rollup:
        a = by_name[row["athlete"]]
        codes = ", ".join(row["flag_codes"])
        table.add_row(row["athlete"], f"[red]{codes}[/red]" if codes else "[dim]–[/dim]", percent(row["compliance"]),
                      row["last_entry"] or "–", *(number(m, a.rolling_7.get(m)) for m in
                                                   ("sleep_hours", "hrv_ms", "steps", "score")))
    console.print(table)
    if len(report.athletes) <= DETAIL_UP_TO:
        for a in report.athletes:
            _detail(a, console)
        return
    flagged = [(a.athlete, f) for a in report.athletes for f in a.flags]
    for athlete, flag in flagged:
        console.print(f"[red]{flag.code}[/red] {athlete}: {flag.message}")
    console.print("[dim]Full figures: pulse report --format html -o report.html (or md, csv, json, pdf)[/dim]")


def _detail(a: AthleteReport, console: Console) -> None:
    last = a.last_entry.isoformat() if a.last_entry else "never"
    readiness = {item["metric"]: readiness_text(item) for item in a.readiness.values()}
    table = Table(title=f"{a.athlete}: {a.days_logged} of {a.days_in_range} days ({percent(a.compliance)}),"
                        f" last entry {last}")
    for header in ("Metric", "Range mean", "7-day avg", "28-day avg", "Readiness"):
        table.add_column(header, justify="left" if header in ("Metric", "Readiness") else "right")
    for m in TREND_METRICS:
        table.add_row(label(m), number(m, a.range_means.get(m)), number(m, a.rolling_7.get(m)),
                      number(m, a.rolling_28.get(m)), readiness.get(m, ""))
    console.print(table)
    console.print(f"[dim]{escape(calendar_text(a))}[/dim]")
    for flag in a.flags:
        console.print(f"[red]{flag.code}[/red] {flag.message} [dim]({flag_numbers(flag.numbers)})[/dim]")
    if not a.flags:
        console.print("[green]no open flags[/green]")


def athletes(
    rows: list[dict[str, Any]], as_of: str | None, device_sync: str | None, console: Console | None = None
) -> None:
    """`as_of`: the --to asked (each athlete is seen as of it or their today, whichever is earlier), or None."""
    console = console or Console(highlight=False)
    when = f" as of {as_of} (or their own today if earlier)" if as_of else ", each as of their own today"
    table = Table(title=f"{len(rows)} athletes{when}; this device last synced {device_sync or 'never'}")
    for header in ("Athlete", "As of", "Last entry", "Last sync", "Days 7d", "Days 28d", "Open flags"):
        table.add_column(header, justify="right" if header.startswith("Days") else "left", no_wrap=True)
    for row in rows:
        codes = ", ".join(f["code"] for f in row["flags"])
        table.add_row(row["athlete"], _as_of_cell(row), row["last_entry"] or "–", row["last_sync"] or "–",
                      str(row["days_7"]), str(row["days_28"]), f"[red]{codes}[/red]" if codes else "[dim]–[/dim]")
    console.print(table)
    if any(row["utc_offset_min"] is None for row in rows):
        console.print("[dim]* zone not known here: that athlete's days are counted in this device's calendar[/dim]")


def _as_of_cell(row: dict[str, Any]) -> str:
    """The athlete's day, in their zone (`2026-12-04 UTC+14:00`), or this device's (`2026-12-03 *`)."""
    offset = row["utc_offset_min"]
    return f"{row['as_of']} {zone_label(offset)}" if offset is not None else f"{row['as_of']} *"
