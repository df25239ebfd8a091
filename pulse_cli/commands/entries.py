"""Commands on the device owner's entries: log, show, history, trends, delete."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pulse_cli.commands.options import FromOption, JsonOption, ToOption, open_device, print_json, within
from pulse_core.usecases import delete_entry, log_entry
from pulse_core.values import parse_date


def log(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Option("--date", "-d", metavar="DATE",
                                             help="Day, YYYY-MM-DD, today or yesterday (default today).")] = None,
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
        typer.Option("--clear", metavar="FIELD", help="Unset a field: sleep, hrv, steps, weight or note (repeatable;"
                     " sleep_hours, hrv_ms and weight_kg work too)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set fields of a day's entry, merging into what is there; prints the entry, its score and warnings.

    \b
    Examples:
      pulse log --sleep 7.5 --steps 9000
      pulse log --date yesterday --hrv 62 --weight 71.4
      pulse log --note "easy run"
      pulse log --clear note --clear weight
    """
    device = open_device(ctx)
    raw = {"sleep_hours": sleep, "hrv_ms": hrv, "hrv_method": hrv_method, "steps": steps,
           "weight_kg": weight, "note": note}
    fields = [clearable(name) for name in clear or ()]
    result = log_entry(device.uow(), device.user, date or device.today, raw, device.today, fields)
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

    \b
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

    \b
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
    days: Annotated[int, typer.Option("--days", metavar="N", show_default=False,
                                      help="Window in days, 1-3660, ending today (default 28).")] = 28,
    end: ToOption = None,
    as_json: JsonOption = False,
) -> None:
    """7- and 28-day rolling averages of each metric and the score, and days logged.

    \b
    Examples:
      pulse trends
      pulse trends --days 90 --json
    """
    from pulse_core.insights import trends as compute_trends

    within("days", days, 1, 3660)
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

    \b
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


# What `--clear` takes: the option's own name (`--sleep`) or the field's (`sleep_hours`).
CLEAR_NAMES = {"sleep": "sleep_hours", "sleep_hours": "sleep_hours", "hrv": "hrv_ms", "hrv_ms": "hrv_ms",
               "steps": "steps", "weight": "weight_kg", "weight_kg": "weight_kg", "note": "note"}
CLEAR_ALLOWED = "sleep, hrv, steps, weight or note (or sleep_hours, hrv_ms, weight_kg)"


def clearable(name: str) -> str:
    """The field `--clear NAME` unsets, or a one-line UsageError naming what is allowed."""
    from pulse_core.errors import UsageError

    field = CLEAR_NAMES.get(name.strip().lower())
    if field is None:
        raise UsageError("clear", name, CLEAR_ALLOWED, f"clear: {name!r} is not a field (allowed {CLEAR_ALLOWED})")
    return field


def register(app: typer.Typer) -> None:
    app.command()(log)
    app.command()(show)
    app.command()(history)
    app.command()(trends)
    app.command()(delete)
