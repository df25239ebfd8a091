"""Subset snapshots: part of a shape, read at one moment, as Electric's `requestSnapshot` and
`fetchSnapshot` ask for it (`subset__where`, `subset__params`, `subset__limit`, `subset__offset`,
`subset__order_by` on a GET, or the same names without the prefix in a POST body).

The subset's `where` has the shape `where`'s grammar and allow-list (`where.py`) and only narrows the
shape; `order_by` is `column [ASC|DESC] [NULLS FIRST|LAST], ...` over the same columns (and `user_id`).
Rows are filtered and ordered here, never in SQL built from the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pulse_server.shapes.errors import ShapeRequestError
from pulse_server.shapes.where import COLUMN_TYPES, Predicate, WhereError, parse_where

# What a subset may be ordered by: the filterable columns, and the key's user_id.
ORDER_TYPES: dict[str, Callable[[str], Any]] = {**COLUMN_TYPES, "user_id": Decimal}
_ORDER_ITEM = re.compile(
    r'^\s*(?P<column>"[a-z_]+"|[a-z_]+)(?:\s+(?P<direction>ASC|DESC))?(?:\s+NULLS\s+(?P<nulls>FIRST|LAST))?\s*$',
    re.IGNORECASE,
)
SUBSET_KEYS = ("where", "params", "limit", "offset", "order_by")


@dataclass(frozen=True)
class OrderItem:
    column: str
    descending: bool
    nulls_first: bool  # Postgres's default: NULLS LAST ascending, NULLS FIRST descending


@dataclass(frozen=True)
class Subset:
    where_text: str | None
    params: dict[str, str]
    predicate: Predicate | None = field(compare=False)
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int

    def select(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """These rows (values in Postgres text form) filtered, ordered, then cut to offset and limit."""
        kept = [r for r in rows if self.predicate is None or self.predicate(r)]
        for item in reversed(self.order_by):  # stable sorts, the last key first
            present = sorted((r for r in kept if r.get(item.column) is not None),
                             key=_sort_key(item.column), reverse=item.descending)
            absent = [r for r in kept if r.get(item.column) is None]
            kept = absent + present if item.nulls_first else present + absent
        end = None if self.limit is None else self.offset + self.limit
        return kept[self.offset:end]


def _sort_key(column: str) -> Callable[[dict[str, Any]], Any]:
    read = ORDER_TYPES[column]
    return lambda row: read(row[column])


def subset_from_query(query: Mapping[str, str]) -> dict[str, Any] | None:
    """A GET's `subset__*` parameters without their prefix (`subset__params` as JSON or as
    `subset__params[n]=`); None when there are none."""
    found: dict[str, Any] = {}
    params: dict[str, str] = {}
    for name, value in query.items():
        if not name.startswith("subset__"):
            continue
        key = name[len("subset__"):]
        if key.startswith("params[") and key.endswith("]"):
            params[key[len("params["):-1]] = value
        elif key in SUBSET_KEYS:
            found[key] = value
    if params and "params" not in found:
        found["params"] = params
    return found or None


def parse_subset(raw: Mapping[str, Any]) -> Subset:
    errors: dict[str, list[str]] = {}
    params = _params(raw.get("params"), errors)
    predicate = None
    where_text = raw.get("where")
    if where_text is not None and not isinstance(where_text, str):
        errors["subset__where"] = ["must be a string"]
    elif where_text:
        try:
            predicate = parse_where(where_text, params)
        except WhereError as exc:
            errors["subset__where"] = [str(exc)]
    limit = _integer(raw.get("limit"), "subset__limit", 1, errors)
    offset = _integer(raw.get("offset"), "subset__offset", 0, errors)
    order_by = _order_by(raw.get("order_by"), errors)
    if limit is not None and not order_by and "subset__order_by" not in errors:
        errors["subset__limit"] = ["a limited subset needs subset__order_by (otherwise which rows is undefined)"]
    if errors:
        raise ShapeRequestError(errors)
    return Subset(where_text or None, params, predicate, order_by, limit, offset or 0)


def _params(raw: Any, errors: dict[str, list[str]]) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            errors["subset__params"] = ["must be a JSON object such as {\"1\": \"5000\"}"]
            return {}
    if isinstance(raw, list):  # positional: $1 is the first
        raw = {str(i + 1): v for i, v in enumerate(raw)}
    if not isinstance(raw, dict) or not all(isinstance(v, (str, int, float, bool)) for v in raw.values()):
        errors["subset__params"] = ["must map parameter numbers to strings or numbers"]
        return {}
    return {str(k): (("true" if v else "false") if isinstance(v, bool) else str(v)) for k, v in raw.items()}


def _integer(raw: Any, name: str, least: int, errors: dict[str, list[str]]) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or (isinstance(raw, str) and not raw.isdigit()):
        errors[name] = [f"{raw!r} is not a whole number (allowed: {least} or more)"]
        return None
    value = int(raw)
    if value < least:
        errors[name] = [f"{value} is too small (allowed: {least} or more)"]
        return None
    return value


def _order_by(raw: Any, errors: dict[str, list[str]]) -> tuple[OrderItem, ...]:
    if raw is None or raw == "":
        return ()
    if not isinstance(raw, str):
        errors["subset__order_by"] = ["must be a string such as '\"date\" DESC'"]
        return ()
    items = []
    for part in raw.split(","):
        match = _ORDER_ITEM.match(part)
        column = match["column"].strip('"') if match else None
        if match is None or column not in ORDER_TYPES:
            errors["subset__order_by"] = [
                f"cannot order by {part.strip()!r} (allowed: column [ASC|DESC] [NULLS FIRST|LAST] over "
                f"{', '.join(ORDER_TYPES)})"]
            return ()
        descending = (match["direction"] or "ASC").upper() == "DESC"
        nulls = match["nulls"]
        items.append(OrderItem(column, descending, descending if nulls is None else nulls.upper() == "FIRST"))
    return tuple(items)
