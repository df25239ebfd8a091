"""The page's local view merges mutations exactly as the server does: random histories of sets and
deletes, by hand and by import, applied by the page's js/replica.js in Chromium and by sync.merge here;
and it judges a conflict's state from an entry as sync.conflict_state does."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Browser
from sync_support import PulseServer

from pulse_core.entry import MERGE_FIELDS, Entry, FieldValue
from sync import stamps_column
from sync.conflict_state import conflict_state
from sync.merge import merge_delete, merge_set

VALUES: dict[str, list[Any]] = {
    "sleep_hours": [None, 6.5, 7.25, 8], "steps": [None, 0, 9000, 12000], "weight_kg": [None, 70.4, 71],
    "note": [None, "easy", "long ride"], "hrv_ms": [None, 48.5, 62],
}

APPLY = """
async ([histories, conflicts]) => {
  const { entryFromRow, applyMutation, conflictState, MERGE_FIELDS } = await import('./js/replica.js');
  return histories.map((history, i) => {
    const entry = entryFromRow({ date: '2026-11-27' });
    for (const m of history) applyMutation(entry, m);
    const out = { deleted: entry.deleted, hrv_method: entry.hrv_method, stamps: {} };
    for (const f of MERGE_FIELDS) { out[f] = entry[f]; out.stamps[f] = entry.stamps[f]; }
    out.stamps.deleted = entry.stamps.deleted;
    out.states = conflicts[i].map((c) => conflictState(c, entry));
    return out;
  });
}
"""


def random_history(rng: random.Random) -> list[dict[str, Any]]:
    history = []
    for _ in range(rng.randint(1, 7)):
        stamp = f"{1_764_230_400_000 + rng.randrange(6):016d}:{rng.randrange(2):05d}:{rng.choice('ab')}"
        source = rng.choice(["manual", "manual", "fitbit"])
        if rng.random() < 0.2:
            history.append({"op": "delete", "fields": {}, "hlc": stamp, "source": source})
            continue
        fields: dict[str, Any] = {}
        for name in rng.sample(sorted(VALUES), rng.randint(1, 3)):
            fields[name] = rng.choice(VALUES[name])
            if name == "hrv_ms":
                fields["hrv_method"] = None if fields[name] is None else rng.choice(["rmssd", "sdnn"])
        history.append({"op": "set", "fields": fields, "hlc": stamp, "source": source})
    return history


def random_conflicts(rng: random.Random, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conflicts on the history's day: the kept stamp one of the history's (or another), the lost value
    one of the values (or the pair, for HRV), sometimes dismissed."""
    stamps = [m["hlc"] for m in history] + ["0001764230400009:00000:z", None]
    found = []
    for _ in range(4):
        field = rng.choice([*sorted(VALUES), "hrv_method"])
        lost: Any = rng.choice(VALUES.get(field, [None, "rmssd"]))
        if field == "hrv_ms" and rng.random() < 0.8:
            lost = {"hrv_ms": lost, "hrv_method": None if lost is None else rng.choice(["rmssd", "sdnn"])}
        found.append({"field": field, "lost": lost, "kept_hlc": rng.choice(stamps), "dismissed": rng.random() < 0.1})
    return found


def replayed(history: list[dict[str, Any]]) -> Entry:
    """The entry the server stores after these mutations."""
    entry = Entry(user="u", date=dt.date(2026, 11, 27))
    for m in history:
        if m["op"] == "delete":
            merge_delete(entry, {}, m["hlc"], m["source"])
            continue
        fields: dict[str, FieldValue] = {
            k: (Decimal(str(v)) if isinstance(v, float) or (isinstance(v, int) and k != "steps") else v)
            for k, v in m["fields"].items()}
        merge_set(entry, fields, {}, m["hlc"], m["source"])
    return entry


def merged_by_the_server(history: list[dict[str, Any]]) -> dict[str, Any]:
    entry = replayed(history)
    out: dict[str, Any] = {"deleted": entry.deleted, "hrv_method": entry.hrv_method,
                           "stamps": {f: entry.stamps.get(f) for f in (*MERGE_FIELDS, "deleted")}}
    for name in MERGE_FIELDS:
        out[name] = entry.value(name)
    return out


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """Numbers compared by value (the page keeps text, the server Decimals and ints)."""
    out = {k: v for k, v in view.items() if k != "states"}
    for name in ("sleep_hours", "hrv_ms", "steps", "weight_kg"):
        out[name] = None if view[name] is None else Decimal(str(view[name]))
    return out


@pytest.fixture(scope="module")
def histories() -> list[list[dict[str, Any]]]:
    rng = random.Random(20261127)
    return [random_history(rng) for _ in range(300)]


@pytest.fixture(scope="module")
def conflicts(histories: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    rng = random.Random(20261204)
    return [random_conflicts(rng, h) for h in histories]


@pytest.fixture(scope="module")
def page_views(browser: Browser, cloud_server: PulseServer, histories: list[list[dict[str, Any]]],
               conflicts: list[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{cloud_server.url}/app/")
    views: list[dict[str, Any]] = page.evaluate(APPLY, [histories, conflicts])
    yield views
    context.close()


def test_the_page_merges_random_histories_like_the_server(
    histories: list[list[dict[str, Any]]], page_views: list[dict[str, Any]]
) -> None:
    different = [(h, comparable(view), comparable(merged_by_the_server(h)))
                 for h, view in zip(histories, page_views, strict=True)
                 if comparable(view) != comparable(merged_by_the_server(h))]
    assert different[:3] == []
    # The histories exercise what matters: deletes that stick and ones a later write undoes, and
    # imported values that a hand-set one outranks.
    assert 20 < sum(v["deleted"] for v in page_views) < 280
    assert any(m["source"] == "fitbit" for h in histories for m in h)


def test_the_page_judges_conflict_states_like_the_server(
    histories: list[list[dict[str, Any]]], conflicts: list[list[dict[str, Any]]], page_views: list[dict[str, Any]]
) -> None:
    expected = []
    for history, found in zip(histories, conflicts, strict=True):
        entry = replayed(history)
        expected.append([conflict_state(c["field"], c["lost"], c["kept_hlc"], c["dismissed"], entry) for c in found])
    got = [view["states"] for view in page_views]
    different = [(h, c, g, e) for h, c, g, e in zip(histories, conflicts, got, expected, strict=True) if g != e]
    assert different[:3] == []
    # Every state is reached, by each kind of field.
    states = {(c["field"] == "hrv_ms", s) for found, view in zip(conflicts, got, strict=True)
              for c, s in zip(found, view, strict=True)}
    assert states >= {(kind, s) for kind in (False, True) for s in ("open", "reasserted", "superseded", "dismissed")}


UNFOLD = """
async (texts) => {
  const { unfoldStamps } = await import('./js/replica.js');
  return texts.map((text) => unfoldStamps(text));
}
"""


def random_stamp_columns(rng: random.Random) -> dict[str, str | None]:
    """Twelve stamp and source columns as rows hold them: often one write's, sometimes odd text."""
    one = (f"{1_764_230_400_000 + rng.randrange(6):016d}:00000:{rng.choice('ab')}", rng.choice(["manual", "fitbit"]))
    out: dict[str, str | None] = {}
    for column in stamps_column.FIELDS:
        roll = rng.random()
        pair = (None, None) if roll < 0.3 else one if roll < 0.8 else (
            rng.choice([None, "x;y z", "%7E~", "="]), rng.choice([None, "sync", "a b=c;%"]))
        out[f"{column}_hlc"], out[f"{column}_src"] = pair
    return out


def test_the_page_unfolds_the_stamps_column_the_server_folds(browser: Browser, cloud_server: PulseServer) -> None:
    rng = random.Random(20261204)
    rows = [random_stamp_columns(rng) for _ in range(300)]
    texts = [stamps_column.encode(r) for r in rows]
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{cloud_server.url}/app/")
    unfolded = page.evaluate(UNFOLD, texts)
    context.close()
    assert [u == r for u, r in zip(unfolded, rows, strict=True)].count(False) == 0
    assert None in texts and any(t and "=" in t.split(";") for t in texts) and any(t and "%" in t for t in texts)
