"""`pulse log`'s confirmation, printed without rich: the command people type most must start fastest
(importing rich costs ~30 ms). The same fields and layout as `render` uses for an entry."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import TextIO

from pulse_core.usecases import LogResult


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def logged(result: LogResult, out: TextIO = sys.stdout) -> None:
    colour = out.isatty()

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    entry = result.entry
    verb = "logged" if result.changed else "unchanged"
    hrv = _fmt(entry.hrv_ms, "ms") + (f" ({entry.hrv_method})" if entry.hrv_method else "")
    score = "needs sleep and steps" if entry.score is None else f"{entry.score} / 100"
    rows = [
        ("Sleep", _fmt(entry.sleep_hours, "h"), entry.sources.get("sleep_hours", "")),
        ("HRV", hrv, entry.sources.get("hrv_ms", "")),
        ("Steps", _fmt(entry.steps), entry.sources.get("steps", "")),
        ("Weight", _fmt(entry.weight_kg, "kg"), entry.sources.get("weight_kg", "")),
    ]
    if entry.note:
        rows.append(("Note", entry.note, entry.sources.get("note", "")))
    rows.append(("Score", score, f"v{entry.score_version}" if entry.score_version else ""))
    width = max(len(value) for _, value, _ in rows)
    lines = [f"{paint(verb, '32')} {entry.date.isoformat()}"]
    lines += [
        f"{paint(f'{label:<7}', '1')} {value:<{width}}  {paint(source, '2')}".rstrip() for label, value, source in rows
    ]
    lines += [f"{paint('warning:', '33')} {w.message}" for w in result.warnings]
    out.write("\n".join(lines) + "\n")
