"""The page's local view merges mutations exactly as the server does: random histories of sets and
deletes, by hand and by import, applied by the page's js/replica.js in Chromium and by sync.merge here."""

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
from sync.merge import merge_delete, merge_set

VALUES: dict[str, list[Any]] = {
    "sleep_hours": [None, 6.5, 7.25, 8], "steps": [None, 0, 9000, 12000], "weight_kg": [None, 70.4, 71],
    "note": [None, "easy", "long ride"], "hrv_ms": [None, 48.5, 62],
}

APPLY = """
async (histories) => {
  const { entryFromRow, applyMutation, MERGE_FIELDS } = await import('./js/replica.js');
  return histories.map((history) => {
    const entry = entryFromRow({ date: '2026-11-27' });
    for (const m of history) applyMutation(entry, m);
    const out = { deleted: entry.deleted, hrv_method: entry.hrv_method, stamps: {} };
    for (const f of MERGE_FIELDS) { out[f] = entry[f]; out.stamps[f] = entry.stamps[f]; }
    out.stamps.deleted = entry.stamps.deleted;
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


def merged_by_the_server(history: list[dict[str, Any]]) -> dict[str, Any]:
    entry = Entry(user="u", date=dt.date(2026, 11, 27))
    for m in history:
        if m["op"] == "delete":
            merge_delete(entry, {}, m["hlc"], m["source"])
            continue
        fields: dict[str, FieldValue] = {
            k: (Decimal(str(v)) if isinstance(v, float) or (isinstance(v, int) and k != "steps") else v)
            for k, v in m["fields"].items()}
        merge_set(entry, fields, {}, m["hlc"], m["source"])
    out: dict[str, Any] = {"deleted": entry.deleted, "hrv_method": entry.hrv_method,
                           "stamps": {f: entry.stamps.get(f) for f in (*MERGE_FIELDS, "deleted")}}
    for name in MERGE_FIELDS:
        out[name] = entry.value(name)
    return out


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """Numbers compared by value (the page keeps text, the server Decimals and ints)."""
    out = dict(view)
    for name in ("sleep_hours", "hrv_ms", "steps", "weight_kg"):
        out[name] = None if view[name] is None else Decimal(str(view[name]))
    return out


@pytest.fixture(scope="module")
def histories() -> list[list[dict[str, Any]]]:
    rng = random.Random(20261127)
    return [random_history(rng) for _ in range(300)]


@pytest.fixture(scope="module")
def page_views(browser: Browser, cloud_server: PulseServer,
               histories: list[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{cloud_server.url}/app/")
    views: list[dict[str, Any]] = page.evaluate(APPLY, histories)
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
