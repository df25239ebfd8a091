"""`pulse coach athletes` in a terminal: one row per athlete that fits 80 columns.

At 80 columns the fixed cells take 54 characters (a 20-character Welltory name with its zone mark, the
last entry's date, "Last sync" as an age like "3 d ago", two day counts) and the gaps 10, leaving the
open flags 16, one code a line. The day the athletes are seen as of goes in the title; an athlete whose
today is another (in another zone) has it under their name. Full ISO times are in --json.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from pulse_cli.sync_text import local_time, plural

UNKNOWN_ZONE = "*"


def show_athletes(rows: list[dict[str, Any]], as_of: str | None, device_sync: str | None,
                  console: Console | None = None, now: dt.datetime | None = None) -> None:
    """`as_of`: the --to asked (each athlete is seen as of it or their today, whichever is earlier), or None."""
    console = console or Console(highlight=False)
    now = now or dt.datetime.now(dt.UTC)
    common = Counter(row["as_of"] for row in rows).most_common(1)[0][0] if rows else ""
    console.print(_title(rows, as_of, common, device_sync), highlight=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("Athlete", no_wrap=True)
    table.add_column("Last entry", no_wrap=True)
    table.add_column("Last sync", no_wrap=True)
    table.add_column("7d", justify="right", no_wrap=True)
    table.add_column("28d", justify="right", no_wrap=True)
    table.add_column("Open flags", overflow="fold", min_width=13)
    for row in rows:
        name = row["athlete"] + (UNKNOWN_ZONE if row.get("utc_offset_min") is None else "")
        if row["as_of"] != common:  # another today than most (another zone): said under the name
            name += f"\n[dim] as of {row['as_of']}[/dim]"
        flags = "\n".join(f["code"] for f in row["flags"])
        table.add_row(name, row["last_entry"] or "–", age(row["last_sync"], now), str(row["days_7"]),
                      str(row["days_28"]), f"[red]{flags}[/red]" if flags else "[dim]–[/dim]")
    console.print(table)
    if any(row.get("utc_offset_min") is None for row in rows):
        console.print(f"[dim]{UNKNOWN_ZONE} zone not known here: that athlete's days are counted in this device's"
                      " calendar[/dim]")


def _title(rows: list[dict[str, Any]], asked: str | None, common: str, device_sync: str | None) -> str:
    if asked:
        seen = f" as of {asked} (or their own today if earlier)"
    else:
        others = "" if all(row["as_of"] == common for row in rows) else " (others as marked)"
        seen = f" as of {common}, their own today{others}"
    synced = local_time(dt.datetime.fromisoformat(device_sync)) if device_sync else "never"
    return f"{plural(len(rows), 'athlete')}{seen}; this device last synced {synced}"


def age(stamp: str | None, now: dt.datetime) -> str:
    """How long ago, in the largest unit that is at least 1: "just now", "5 min ago", "3 h ago", "12 d ago",
    "4 mo ago", "2 y ago"."""
    if not stamp:
        return "–"
    seconds = (now - dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    if seconds < 60:
        return "just now"
    for unit, size in (("y", 365 * 86400), ("mo", 30 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"
