"""Everything the terminal shows to people, with rich. Imported lazily: JSON output never loads it."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from pulse_cli.sync_text import plural
from pulse_core.entry import Entry
from pulse_core.insights import metric_value
from pulse_core.queries import DayView
from pulse_core.usecases import ImportSummary

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

BARS = "▁▂▃▄▅▆▇█"
GAP = "·"
LABELS = {
    "sleep_hours": ("Sleep", "h"),
    "hrv_ms": ("HRV", "ms"),
    "steps": ("Steps", ""),
    "weight_kg": ("Weight", "kg"),
    "score": ("Score", ""),
}


def sparkline(values: Sequence[float | None]) -> str:
    """One character per day; a gap where the day has no value (missing is never zero)."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = high - low or 1.0
    return "".join(GAP if v is None else BARS[round((v - low) / span * (len(BARS) - 1))] for v in values)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "[dim]–[/dim]"
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
    elif isinstance(value, float):
        text = f"{value:,.2f}".rstrip("0").rstrip(".")
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def _entry_table(entry: Entry) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="dim")
    table.add_row("Sleep", _fmt(entry.sleep_hours, "h"), entry.sources.get("sleep_hours", ""))
    hrv = _fmt(entry.hrv_ms, "ms") + (f" ({entry.hrv_method})" if entry.hrv_method else "")
    table.add_row("HRV", hrv, entry.sources.get("hrv_ms", ""))
    table.add_row("Steps", _fmt(entry.steps), entry.sources.get("steps", ""))
    table.add_row("Weight", _fmt(entry.weight_kg, "kg"), entry.sources.get("weight_kg", ""))
    if entry.note:
        table.add_row("Note", entry.note, entry.sources.get("note", ""))
    score = "[dim]needs sleep and steps[/dim]" if entry.score is None else f"[bold]{entry.score}[/bold] / 100"
    table.add_row("Score", score, f"v{entry.score_version}" if entry.score_version else "")
    return table


def day(view: DayView) -> None:
    console.print(f"[bold]{view.entry.date.isoformat()}[/bold]")
    console.print(_entry_table(view.entry))
    for metric, r in view.readiness.items():
        label, unit = LABELS[metric]
        if r.status == "calibrating":
            text = f"calibrating ({r.baseline.days} of 7 days in the last 28)"
        elif r.status == "no value":
            text = "no value today"
        else:
            mean, sd = r.baseline.mean or 0.0, r.baseline.sd or 0.0
            colour = {"below": "red", "above": "cyan"}.get(r.status, "green")
            text = (f"[{colour}]{r.status}[/{colour}] baseline {_fmt(mean, unit)} ± {_fmt(sd)}"
                    f" over {r.baseline.days} days" + (f", z {r.z:+.2f}" if r.z is not None else ""))
        console.print(f"{label} readiness: {text}")


def history(rows: Sequence[Entry], first: dt.date, last: dt.date) -> None:
    from pulse_cli.history_table import MISSING, HistoryTable

    def value(v: Any) -> str:
        return MISSING if v is None else _fmt(v)

    days = (last - first).days + 1
    console.print(HistoryTable(
        f"{first.isoformat()} to {last.isoformat()}: {len(rows)} of {plural(days, 'day')} logged",
        [(row.date.isoformat(), value(row.sleep_hours),
          value(row.hrv_ms) + (" sdnn" if row.hrv_method == "sdnn" else ""), value(row.steps),
          value(row.weight_kg), value(row.score), row.note or "") for row in rows],
    ))
    by_day = {e.date: e for e in rows}
    dates = [first + dt.timedelta(days=i) for i in range(days)]
    series = {
        metric: [None if (e := by_day.get(d)) is None else metric_value(e, metric) for d in dates]
        for metric in LABELS
    }
    console.print(_sparklines(series, width=max(10, console.width - 36)))


def _sparklines(series: dict[str, list[float | None]], width: int) -> Table:
    """One line per metric: its last `width` days, with the range it spans."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(style="cyan", no_wrap=True, overflow="crop")
    table.add_column(style="dim", no_wrap=True)
    for metric, values in series.items():
        label, unit = LABELS[metric]
        present = [v for v in values if v is not None]
        span = f"{_fmt(min(present))}–{_fmt(max(present), unit)}" if present else "no values"
        table.add_row(label, sparkline(values[-width:]), span)
    return table


def trends(report: dict[str, Any]) -> None:
    table = Table(title=f"Trends {report['from']} to {report['to']}: {plural(report['days_logged'], 'day')} logged")
    for header in ("Metric", "7-day avg", "28-day avg", f"Days with value (of {report['days']})"):
        table.add_column(header, justify="left" if header == "Metric" else "right", no_wrap=True)
    for metric, trend in report["metrics"].items():
        label, unit = LABELS[metric]
        table.add_row(label, _fmt(trend.avg_7, unit), _fmt(trend.avg_28, unit), str(trend.days_with_value))
    console.print(table)
    series = {metric: trend.series for metric, trend in report["metrics"].items()}
    console.print(_sparklines(series, width=max(10, console.width - 36)))


@contextlib.contextmanager
def import_progress(enabled: bool = True) -> Iterator[Any]:
    """A progress bar driven by the importer's `(done, total)` calls; quiet when not a terminal."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("importing", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def import_summary(summary: ImportSummary) -> None:
    """One line that adds up (read = imported + updated + unchanged + skipped), then one line per reason."""
    restored = f" ({summary.restored} restored)" if summary.restored else ""
    console.print(
        f"[green]{summary.source}[/green]: {plural(summary.read, 'day')} read: {summary.imported} imported{restored},"
        f" {summary.updated} updated, {summary.unchanged} unchanged, {sum(summary.skipped.values())} skipped"
    )
    for reason, count in sorted(summary.skipped.items()):
        console.print(f"  skipped {count}: {reason}")
    if summary.kept:
        kept = ", ".join(f"{name} {count}" for name, count in sorted(summary.kept.items()))
        total = sum(summary.kept.values())
        console.print(f"  kept {plural(total, 'value')} you set by hand: {kept}")
    if summary.left_empty:
        empty = ", ".join(f"{name} {count}" for name, count in sorted(summary.left_empty.items()))
        total = sum(summary.left_empty.values())
        console.print(f"  left {plural(total, 'field')} empty that you deleted or cleared by hand:"
                      f" {empty} (--restore-deleted fills them)")


def import_hint(why: str) -> None:
    """Why an import read no day (what the file held), under the summary."""
    from rich.padding import Padding
    from rich.text import Text

    console.print(Padding(Text.assemble(("nothing counted: ", "yellow"), why), (0, 0, 0, 2)))
