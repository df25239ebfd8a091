"""A recorded conflict's state, judged from the entry as it is now (the same rule on every replica).

    open        the field still holds the kept value (the kept stamp)
    reasserted  the field now holds the value that lost, written later (`pulse conflicts --reassert`)
    superseded  a later value replaced both
    dismissed   the user put it aside, on any device

Only the dismissal is stored: the rest follows from the entry, so a conflict's state moves on by
itself as later writes arrive, on the server and on every device alike.
"""

from __future__ import annotations

from typing import Any

from pulse_core.entry import MERGE_FIELDS, Entry
from sync.merge import shown, values_of

STATES = ("open", "reasserted", "superseded", "dismissed")


def conflict_state(field: str, lost: Any, kept_hlc: str | None, dismissed: bool, entry: Entry | None) -> str:
    if dismissed:
        return "dismissed"
    if entry is None or field not in MERGE_FIELDS:
        return "superseded"
    if entry.stamps.get(field) == kept_hlc:
        return "open"
    if shown(values_of(entry, field)) == lost:
        return "reasserted"
    return "superseded"
