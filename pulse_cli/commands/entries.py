"""Commands on the device owner's entries: log, show, history, trends, delete."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pulse_cli.commands.options import FromOption, JsonOption, ToOption, open_device, print_json
from pulse_core.usecases import delete_entry, log_entry
from pulse_core.values import parse_date


def log(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Option("--date", "-d", help="Day, YYYY-MM-DD (default today).")] = None,
    sleep: Annotated[str | None, typer.Option("--sleep", metavar="HOURS", help="Hours asleep, 0-24.")] = None,
    hrv: Annotated[str | None, typer.Option("--hrv", metavar="MS", help="Heart-rate variability, 1-300 ms.")] = None,
    hrv_method: Annotated[
        str | None, typer.Option("--hrv-method", metavar="rmssd|sdnn", help="How HRV was measured (default rmssd).")
    ] = None,
    steps: Annotated[str | None, typer.Option("--steps", metavar="N", help="Steps, 0-100000.")] = None,
    weight: Annotated[str | None, typer.Option("--weight", metavar="KG", help="Body weight, 20-500 kg.")] = None,
    note: Annotated[str | None, typer.Option("--note", metavar="TEXT", help="Free text; empty clears it.")] = None,
    clear: Annotated[
        list[str] | None,
        typer.Option("--clear", metavar="FIELD", help="Unset a field (sleep_hours, hrv_ms, steps, weight_kg, note)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set fields of a day's entry, merging into what is there; prints the entry, its score and warnings.

    Examples:
      pulse log --sleep 7.5 --steps 9000
      pulse log --date 2026-11-26 --hrv 62 --hrv-method rmssd --weight 71.4
      pulse log --clear note
    """
    device = open_device(ctx)
    raw = {"sleep_hours": sleep, "hrv_ms": hrv, "hrv_method": hrv_method, "steps": steps,
           "weight_kg": weight, "note": note}
    result = log_entry(device.uow(), device.user, date or device.today, raw, device.today, clear or ())
    if as_json:
        print_json({"entry": result.entry.as_json(), "changed": result.changed,
                    "warnings": [w.as_json() for w in result.warnings]})
        return
    from pulse_cli import render_plain

    render_plain.logged(result)


def show(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Argument(metavar="[DATE]", help="Day, YYYY-MM-DD (default today).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show one day's entry, its score and readiness against your 28-day baseline.

    Examples:
      pulse show
      pulse show 2026-11-26 --json
    """
    from pulse_core import queries

    device = open_device(ctx)
    day = parse_date(date, device.today, reading=True) if date else device.today
    view = queries.day_view(device.entries, device.user, day)
    if as_json:
        print_json(view.as_json())
        return
    from pulse_cli import render

    render.day(view)


def history(
    ctx: typer.Context, start: FromOption = None, end: ToOption = None, as_json: JsonOption = False
) -> None:
    """List entries in a date range (default the last 28 days) as a table with sparklines.

    Examples:
      pulse history
      pulse history --from 2026-10-01 --to 2026-10-31 --json
    """
    from pulse_core import queries

    device = open_device(ctx)
    first, last = queries.date_range(start, end, device.today)
    rows = device.entries.list(device.user, first, last)
    if as_json:
        print_json({"from": first.isoformat(), "to": last.isoformat(), "entries": [e.as_json() for e in rows]})
        return
    from pulse_cli import render

    render.history(rows, first, last)


def trends(
    ctx: typer.Context,
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="Window in days, ending today.")] = 28,
    end: ToOption = None,
    as_json: JsonOption = False,
) -> None:
    """7- and 28-day rolling averages of each metric and the score, and days logged.

    Examples:
      pulse trends
      pulse trends --days 90 --json
    """
    from pulse_core.insights import trends as compute_trends

    device = open_device(ctx)
    last = parse_date(end, device.today, "to", reading=True) if end else device.today
    window_start = last - dt.timedelta(days=max(days, 28) - 1)
    report = compute_trends(device.entries.list(device.user, window_start, last), last, days)
    if as_json:
        print_json({**report, "metrics": {k: t.as_json() for k, t in report["metrics"].items()}})
        return
    from pulse_cli import render

    render.trends(report)


def delete(
    ctx: typer.Context,
    date: Annotated[str, typer.Argument(metavar="DATE", help="Day to delete, YYYY-MM-DD.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a day's entry (synced as a tombstone, so older edits cannot bring it back).

    Examples:
      pulse delete 2026-11-20
      pulse delete 2026-11-20 --yes
    """
    from pulse_core import queries

    device = open_device(ctx)
    day = parse_date(date, device.today)
    view = queries.day_view(device.entries, device.user, day)  # fails clearly if there is none
    if not yes and not typer.confirm(f"Delete the entry for {day.isoformat()}?", default=False):
        raise typer.Exit(1)
    delete_entry(device.uow(), device.user, view.entry.date, device.today)
    typer.echo(f"deleted {day.isoformat()}")


def register(app: typer.Typer) -> None:
    app.command()(log)
    app.command()(show)
    app.command()(history)
    app.command()(trends)
    app.command()(delete)
