"""Labels and number formatting shared by every report format."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulse_cli.reports_render.model import TeamReport
    from pulse_core.reports import AthleteReport, WeekRow

LABELS: dict[str, tuple[str, str]] = {
    "sleep_hours": ("Sleep", "h"),
    "hrv_ms": ("HRV", "ms"),
    "steps": ("Steps", ""),
    "weight_kg": ("Weight", "kg"),
    "score": ("Score", ""),
}
WHOLE = ("steps",)


def label(metric: str) -> str:
    name, unit = LABELS[metric]
    return f"{name} ({unit})" if unit else name


def number(metric: str, value: float | None, missing: str = "–") -> str:
    """Steps and the score as whole numbers with separators, the rest to two decimals at most."""
    if value is None:
        return missing
    if metric in WHOLE:
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def week_days(w: WeekRow) -> str:
    """Days logged of the week's days in the range: `5 of 7`, `0 of 7` (a week with no entry), `2 of 3`."""
    return f"{w.days_logged} of {w.days_in_range}"


def athletes_count(n: int) -> str:
    return f"{n} athlete" if n == 1 else f"{n} athletes"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def readiness_text(item: dict[str, Any]) -> str:
    """One readiness item (pulse_core's as_json) as a short phrase."""
    status = str(item.get("status"))
    base = item.get("baseline") or {}
    if status == "calibrating":
        return f"calibrating ({base.get('days', 0)} of 7 days)"
    if status == "no value":
        return "no value that day"
    metric = str(item.get("metric"))
    z = item.get("z")
    z_text = "" if z is None else f", z {z:+.2f}"
    return (f"{status} (baseline {number(metric, base.get('mean'))} ± {number(metric, base.get('sd'))}"
            f" over {base.get('days')} days{z_text})")


def flag_numbers(numbers: dict[str, Any]) -> str:
    """A flag's numbers as `key value; key value`, lists joined by commas."""
    parts = []
    for key, value in numbers.items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else "–" if value is None else str(value)
        parts.append(f"{key.replace('_', ' ')} {shown}")
    return "; ".join(parts)


def zone_label(utc_offset_min: int) -> str:
    """Minutes east of UTC as `UTC+14:00`, `UTC-11:00`, `UTC+05:45`."""
    sign = "-" if utc_offset_min < 0 else "+"
    hours, minutes = divmod(abs(utc_offset_min), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def calendar_text(a: AthleteReport) -> str:
    """Whose days an athlete's figures count, and the range they cover."""
    span = f"{a.start.isoformat()} to {a.end.isoformat()}"
    cal = a.calendar
    if cal is None:
        return f"Range {span}."
    if cal.utc_offset_min is not None:
        return (f"Range {span}, in the athlete's calendar ({zone_label(cal.utc_offset_min)}, where today is"
                f" {cal.today.isoformat()}).")
    return (f"Range {span}, in this device's calendar (today {cal.today.isoformat()}): the athlete's zone is not"
            " known here (their devices never pushed one, or this device has not synced since).")


def as_of_text(report: TeamReport) -> str:
    """"evaluated as of D", or each athlete's own day when their calendars put them on different days."""
    ends = sorted({a.end for a in report.athletes})
    if len(ends) <= 1:
        return f"evaluated as of {report.end.isoformat()}"
    return (f"each evaluated as of their own last day ({ends[0].isoformat()} to {ends[-1].isoformat()}: the"
            " earlier of --to and their today)")
