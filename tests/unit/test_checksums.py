"""The entry digest (sync/checksums.py) against its documentation (docs/verify.md): the exact bytes of the
encoding, one text per value whatever its representation, and every part of an entry counted."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
from decimal import Decimal

import pytest

from pulse_core.entry import Entry
from sync.checksums import (
    canonical,
    day_digests,
    differing_parts,
    entry_digest,
    month_bounds,
    month_digests,
    value_text,
)

S1 = "0001764000000000:00000:phone"
S2 = "0001764000000001:00003:laptop"


def full_entry() -> Entry:
    return Entry(
        user="", date=dt.date(2026, 11, 27), sleep_hours=Decimal("7.50"), hrv_ms=Decimal("62.00"), hrv_method="sdnn",
        steps=9000, weight_kg=Decimal("71.4"), note="easy run, café", score=86, score_version=1,
        stamps={"sleep_hours": S1, "hrv_ms": S1, "steps": S2, "weight_kg": S1, "note": S1},
        sources={"sleep_hours": "manual", "hrv_ms": "apple-health", "steps": "fitbit", "weight_kg": "manual",
                 "note": "manual"},
    )


def test_the_encoding_is_the_documented_json_array() -> None:
    # Written from docs/verify.md, item by item: tag, date, then (value[, method], stamp, source) per part,
    # deleted as 'true'/'false', score, score version; every item a string or null; no spaces; UTF-8.
    expected = (
        '["pulse-entry/1","2026-11-27",'
        f'"7.50","{S1}","manual",'
        f'"62.00","sdnn","{S1}","apple-health",'
        f'"9000","{S2}","fitbit",'
        f'"71.40","{S1}","manual",'
        f'"easy run, café","{S1}","manual",'
        '"false",null,null,'
        '"86","1"]'
    ).encode()
    assert canonical(full_entry()) == expected
    assert entry_digest(full_entry()) == hashlib.sha256(expected).hexdigest()


def test_a_tombstone_is_encoded_with_its_stamp_and_source_and_no_values() -> None:
    tombstone = Entry(user="", date=dt.date(2026, 1, 2), deleted=True,
                      stamps={f: S2 for f in ("sleep_hours", "steps", "deleted")},
                      sources={f: "manual" for f in ("sleep_hours", "steps", "deleted")})
    expected = (f'["pulse-entry/1","2026-01-02",null,"{S2}","manual",null,null,null,null,null,"{S2}","manual",'
                f'null,null,null,null,null,null,"true","{S2}","manual",null,null]').encode()
    assert canonical(tombstone) == expected


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("7.5"), "7.50"), (Decimal("7.50"), "7.50"), (Decimal("7.500"), "7.50"), (Decimal("62"), "62.00"),
    (Decimal("0"), "0.00"), (Decimal("7.505"), "7.505"), (Decimal("1E+1"), "10.00"),
    (9000, "9000"), (0, "0"), (True, "true"), (False, "false"), (None, None), ("rmssd", "rmssd"),
])
def test_each_value_has_one_text_whatever_its_representation(value: object, text: str | None) -> None:
    assert value_text(value) == text


def test_postgres_and_sqlite_representations_of_one_row_give_one_digest() -> None:
    from_postgres = full_entry()  # numeric(4,2) reads as Decimal('7.50'), numeric(5,2) as Decimal('71.40')
    from_sqlite = dataclasses.replace(full_entry(), sleep_hours=Decimal("7.5"), weight_kg=Decimal("71.40"))
    assert entry_digest(from_postgres) == entry_digest(from_sqlite)


@pytest.mark.parametrize(("change", "part"), [
    ({"sleep_hours": Decimal("7.51")}, "sleep_hours"),
    ({"hrv_method": "rmssd"}, "hrv_ms"),
    ({"steps": 9001}, "steps"),
    ({"note": "easy run, cafe"}, "note"),
    ({"deleted": True}, "deleted"),
    ({"score": 85}, "score"),
    ({"score_version": 2}, "score_version"),
    ({"stamps": {**full_entry().stamps, "steps": S1}}, "steps stamp"),
    ({"sources": {**full_entry().sources, "weight_kg": "fitbit"}}, "weight_kg source"),
    ({"stamps": {**full_entry().stamps, "deleted": S2}}, "deleted stamp"),
])
def test_every_part_of_an_entry_changes_its_digest_and_is_named(change: dict[str, object], part: str) -> None:
    other = dataclasses.replace(full_entry(), **change)  # type: ignore[arg-type]
    assert entry_digest(other) != entry_digest(full_entry())
    assert differing_parts(full_entry(), other) == [part]


def test_a_month_digest_is_the_hash_of_its_dated_day_digests_in_date_order() -> None:
    days = [dataclasses.replace(full_entry(), date=dt.date(2026, 11, d), steps=1000 + d) for d in (3, 1, 30)]
    days.append(dataclasses.replace(full_entry(), date=dt.date(2026, 12, 1)))
    random.Random(7).shuffle(days)
    digests = day_digests(days)
    november = "".join(f"2026-11-{d:02d} {digests[dt.date(2026, 11, d)]}\n" for d in (1, 3, 30))
    months = month_digests(digests)
    assert set(months) == {"2026-11", "2026-12"}
    assert months["2026-11"].digest == hashlib.sha256(november.encode()).hexdigest()
    assert months["2026-11"].days == 3 and months["2026-12"].days == 1


def test_month_bounds() -> None:
    assert month_bounds("2024-02") == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert month_bounds("2026-12") == (dt.date(2026, 12, 1), dt.date(2026, 12, 31))
