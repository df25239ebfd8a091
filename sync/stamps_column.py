"""The shape's `stamps` column: an entry's twelve stamp and source columns as one short text.

A synced row carries, for each of its six stamped fields, the stamp of the write that set it and that
write's source (`sleep_hours_hlc`, `sleep_hours_src`, ...). Sent as twelve columns they were half of a
snapshot's bytes, though a day is usually written by one write: the same stamp and source six times.
The shape's default columns carry them as `stamps` instead (docs/shapes.md, "Stamps"):

    <part>;<part>;<part>;<part>;<part>;<part>        one part per field, in FIELDS order

    ""              the field has neither stamp nor source
    "="             the same stamp and source as the nearest earlier part that has them
    "<hlc> <src>"   the stamp and the source, each "~" when null, otherwise with "%", ";", " ", "="
                    and "~" written as %25, %3B, %20, %3D, %7E

so a day written at once is `0001735689600000:00000:phone-1 manual;=;=;=;;=` (its note unset). The
twelve columns stay available by name in `columns=`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from sync.errors import ShapeProtocolError

FIELDS = ("sleep_hours", "hrv_ms", "steps", "weight_kg", "note", "deleted")
COLUMNS = tuple(c for f in FIELDS for c in (f"{f}_hlc", f"{f}_src"))
NULL = "~"
SAME = "="
_SPECIAL = re.compile(r"[%; =~]")


class StampsTextError(ShapeProtocolError, ValueError):
    """A `stamps` text that does not follow the format: the server sent what a shape cannot hold, said as
    every other malformed shape message is (a sync error naming it; the next round asks again)."""


def _escape(text: str | None) -> str:
    if text is None:
        return NULL
    return _SPECIAL.sub(lambda m: f"%{ord(m[0]):02X}", text) if _SPECIAL.search(text) else text


def _unescape(text: str) -> str | None:
    return None if text == NULL else unquote(text) if "%" in text else text


def encode(row: Mapping[str, str | None]) -> str | None:
    """The `stamps` text of a row's twelve stamp and source columns (text values; missing ones null);
    None when the row has none at all."""
    parts: list[str] = []
    last: tuple[str | None, str | None] | None = None
    for f in FIELDS:
        pair = (row.get(f"{f}_hlc"), row.get(f"{f}_src"))
        if pair == (None, None):
            parts.append("")
        elif pair == last:
            parts.append(SAME)
        else:
            parts.append(f"{_escape(pair[0])} {_escape(pair[1])}")
            last = pair
    if last is None:
        return None
    return ";".join(parts)


def decode(text: str | None) -> dict[str, str | None]:
    """The twelve stamp and source columns of a `stamps` text (all null for null)."""
    out: dict[str, str | None] = dict.fromkeys(COLUMNS)
    if text is None or text == "":
        return out
    parts = text.split(";")
    if len(parts) != len(FIELDS):
        raise StampsTextError(f"stamps: {text!r} has {len(parts)} parts (allowed {len(FIELDS)}, one a field)")
    last: tuple[str | None, str | None] | None = None
    for f, part in zip(FIELDS, parts, strict=True):
        if part == "":
            continue
        if part == SAME:
            if last is None:
                raise StampsTextError(f"stamps: {text!r} repeats ({SAME}) before any stamp (allowed after one)")
            pair = last
        else:
            hlc, space, src = part.partition(" ")
            if not space or " " in src:
                raise StampsTextError(f"stamps: part {part!r} of {text!r} is not '<hlc> <src>'")
            pair = (_unescape(hlc), _unescape(src))
        out[f"{f}_hlc"], out[f"{f}_src"] = pair
        last = pair
    return out


def expand(value: Mapping[str, Any]) -> dict[str, Any]:
    """A shape row with its `stamps` column (when it has one) replaced by the twelve columns it holds."""
    if "stamps" not in value:
        return dict(value)
    out = {k: v for k, v in value.items() if k != "stamps"}
    text = value["stamps"]
    out.update(decode(text if isinstance(text, str) else None))
    return out
