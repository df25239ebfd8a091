"""Use cases against the in-memory unit of work: no mocks, failures injected through the public seams."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from pulse_core.entry import MERGE_FIELDS
from pulse_core.errors import NotFoundError, UsageError, ValidationError
from pulse_core.memory import InMemoryUnitOfWork
from pulse_core.usecases import DayRecord, delete_entry, import_days, log_entry
from sync.hlc import Stamp

TODAY = dt.date(2026, 3, 10)
DAY = dt.date(2026, 3, 9)
USER = "ana"


@pytest.fixture
def uow() -> InMemoryUnitOfWork:
    return InMemoryUnitOfWork()


def stored(uow: InMemoryUnitOfWork, day: dt.date = DAY) -> object:
    return uow.committed_rows.get((USER, day))


# --- logging a day -----------------------------------------------------------------------------------


def test_logging_a_day_stores_the_values_with_the_score_and_its_version(uow: InMemoryUnitOfWork) -> None:
    result = log_entry(
        uow, USER, "2026-03-09", {"sleep_hours": "7.5", "hrv_ms": "60", "steps": "9000"}, TODAY
    )
    assert result.changed
    entry = uow.entries.get(USER, DAY)
    assert entry is not None
    assert (entry.sleep_hours, entry.hrv_ms, entry.hrv_method, entry.steps) == (
        Decimal("7.5"),
        Decimal(60),
        "rmssd",
        9000,
    )
    # (30 + 12 + 9000/333) / 80 * 100 = 86.28 -> 86
    assert (entry.score, entry.score_version) == (86, 1)
    assert uow.commits == 1


def test_logging_a_day_appends_one_mutation_with_the_fields_set_and_their_base_stamps(
    uow: InMemoryUnitOfWork,
) -> None:
    log_entry(uow, USER, DAY, {"sleep_hours": "7.5", "steps": "9000"}, TODAY)
    [change] = uow.outbox
    assert (change.user, change.date, change.op, change.source) == (USER, DAY, "set", "manual")
    assert change.fields == {"sleep_hours": Decimal("7.5"), "steps": 9000}
    assert change.base == {"sleep_hours": None, "steps": None}
    Stamp.parse(change.stamp)  # a well-formed, fixed-width stamp


def test_each_field_keeps_the_stamp_and_source_of_the_edit_that_set_it(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, DAY, {"sleep_hours": "7.5", "steps": "9000"}, TODAY)
    first = uow.outbox[0].stamp
    log_entry(uow, USER, DAY, {"steps": "12000", "hrv_ms": "55", "hrv_method": "sdnn"}, TODAY)
    second = uow.outbox[1]
    assert second.stamp > first
    assert second.fields == {"steps": 12000, "hrv_ms": Decimal(55), "hrv_method": "sdnn"}
    # the base is the stamp each field had before this edit: hrv_method travels with hrv_ms
    assert second.base == {"steps": first, "hrv_ms": None}
    entry = uow.entries.get(USER, DAY)
    assert entry is not None
    assert entry.stamps == {"sleep_hours": first, "steps": second.stamp, "hrv_ms": second.stamp}
    assert entry.sources == {"sleep_hours": "manual", "steps": "manual", "hrv_ms": "manual"}
    assert (entry.sleep_hours, entry.steps) == (Decimal("7.5"), 12000)


def test_logging_the_same_values_again_changes_nothing(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, DAY, {"sleep_hours": "7.5", "steps": "9000"}, TODAY)
    again = log_entry(uow, USER, DAY, {"sleep_hours": "7.50", "steps": 9000}, TODAY)
    assert not again.changed
    assert len(uow.outbox) == 1
    assert uow.commits == 1


def test_an_invalid_value_stores_nothing_and_records_nothing(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(ValidationError) as info:
        log_entry(uow, USER, DAY, {"sleep_hours": "7.5", "steps": "100001"}, TODAY)
    assert info.value.field == "steps"
    assert uow.committed_rows == {}
    assert uow.outbox == []


def test_a_date_more_than_a_day_ahead_is_rejected(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(ValidationError) as info:
        log_entry(uow, USER, "2026-03-12", {"steps": "100"}, TODAY)
    assert info.value.field == "date"
    log_entry(uow, USER, "2026-03-11", {"steps": "100"}, TODAY)
    assert len(uow.outbox) == 1


def test_logging_nothing_is_a_usage_error(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(UsageError) as info:
        log_entry(uow, USER, DAY, {}, TODAY)
    assert info.value.field == "fields"
    assert uow.outbox == []


def test_a_usage_error_carries_the_bad_request_code(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(UsageError) as info:
        log_entry(uow, USER, DAY, {}, TODAY)
    assert info.value.code == "bad_request"
    assert info.value.as_dict()["code"] == "bad_request"


def test_logging_returns_warnings_for_implausible_values_but_keeps_them(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-02", {"weight_kg": "80"}, TODAY)  # 7 days before DAY
    result = log_entry(uow, USER, DAY, {"sleep_hours": "2", "weight_kg": "83"}, TODAY)  # 3.75% up
    assert [(w.field, w.code) for w in result.warnings] == [
        ("sleep_hours", "warn_low"),
        ("weight_kg", "warn_weight_change"),
    ]
    assert "2026-03-02" in result.warnings[1].message
    entry = uow.entries.get(USER, DAY)
    assert entry is not None and entry.sleep_hours == 2 and entry.weight_kg == 83


def test_logging_a_weight_compares_it_only_with_a_weight_from_the_7_days_before(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-02-20", {"weight_kg": "52.6"}, TODAY)
    far = log_entry(uow, USER, "2026-02-28", {"weight_kg": "64.4"}, TODAY)  # 8 days after 52.6
    assert far.warnings == []
    near = log_entry(uow, USER, "2026-03-07", {"weight_kg": "60"}, TODAY)  # 7 days after 64.4
    assert [w.message for w in near.warnings] == [
        "weight_kg: 60 kg is 6.8% from the previous entry of 64.4 kg on 2026-02-28 (warning above 3%)"
    ]


def test_clearing_a_field_sets_it_to_null_with_a_new_stamp(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, DAY, {"sleep_hours": "7.5", "steps": "9000", "hrv_ms": "40"}, TODAY)
    log_entry(uow, USER, DAY, {}, TODAY, clear=["steps", "hrv_ms"])
    entry = uow.entries.get(USER, DAY)
    assert entry is not None
    assert (entry.steps, entry.hrv_ms, entry.hrv_method) == (None, None, None)
    assert entry.score is None and entry.score_version is None  # no steps, no score
    change = uow.outbox[-1]
    assert change.fields == {"steps": None, "hrv_ms": None, "hrv_method": None}
    assert entry.stamps["steps"] == change.stamp


def test_clearing_an_unknown_field_is_a_usage_error(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(UsageError) as info:
        log_entry(uow, USER, DAY, {}, TODAY, clear=["mood"])
    assert "'mood'" in info.value.message
    assert uow.outbox == []


def test_entries_of_different_users_are_kept_apart(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, DAY, {"steps": "100"}, TODAY)
    log_entry(uow, "ben", DAY, {"steps": "200"}, TODAY)
    assert [e.steps for e in uow.entries.list(USER)] == [100]
    assert [e.steps for e in uow.entries.list("ben")] == [200]


# --- deleting a day ----------------------------------------------------------------------------------


def test_deleting_a_day_leaves_a_tombstone_with_every_field_null_at_the_delete_stamp(
    uow: InMemoryUnitOfWork,
) -> None:
    log_entry(uow, USER, DAY, {"sleep_hours": "7.5", "steps": "9000"}, TODAY)
    set_stamp = uow.outbox[0].stamp
    delete_entry(uow, USER, DAY, TODAY)
    change = uow.outbox[-1]
    assert (change.op, change.fields) == ("delete", {})
    assert change.base == {
        "sleep_hours": set_stamp,
        "hrv_ms": None,
        "steps": set_stamp,
        "weight_kg": None,
        "note": None,
    }
    tomb = uow.entries.get(USER, DAY)
    assert tomb is not None and tomb.deleted
    assert all(tomb.value(name) is None for name in MERGE_FIELDS)
    assert tomb.score is None
    assert {tomb.stamps[name] for name in (*MERGE_FIELDS, "deleted")} == {change.stamp}
    assert uow.entries.list(USER) == []


def test_deleting_a_day_with_no_entry_is_not_found(uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(NotFoundError):
        delete_entry(uow, USER, DAY, TODAY)
    log_entry(uow, USER, DAY, {"steps": "1"}, TODAY)
    delete_entry(uow, USER, DAY, TODAY)
    with pytest.raises(NotFoundError):
        delete_entry(uow, USER, DAY, TODAY)
    assert [c.op for c in uow.outbox] == ["set", "delete"]


def test_a_later_edit_brings_a_deleted_day_back_with_only_its_new_fields(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, DAY, {"sleep_hours": "7.5", "steps": "9000"}, TODAY)
    delete_entry(uow, USER, DAY, TODAY)
    log_entry(uow, USER, DAY, {"steps": "9000"}, TODAY)
    entry = uow.entries.get(USER, DAY)
    assert entry is not None and not entry.deleted
    assert (entry.sleep_hours, entry.steps) == (None, 9000)
    assert len(uow.outbox) == 3


# --- importing days ----------------------------------------------------------------------------------


def fitbit_days() -> list[DayRecord]:
    return [
        DayRecord(dt.date(2026, 3, 1), {"sleep_hours": "7", "steps": 8000}),
        DayRecord(dt.date(2026, 3, 2), {"sleep_hours": "6.5", "steps": 12000, "hrv_ms": 48}),
    ]


def test_importing_days_stores_them_with_the_importer_as_source_in_one_transaction(
    uow: InMemoryUnitOfWork,
) -> None:
    summary = import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    assert summary.as_json() == {
        "source": "fitbit",
        "days_read": 2,
        "imported": 2,
        "restored": 0,
        "updated": 0,
        "unchanged": 0,
        "skipped": {},
        "kept": {},
        "left_empty": {},
    }
    assert uow.commits == 1
    assert [c.source for c in uow.outbox] == ["fitbit", "fitbit"]
    entry = uow.entries.get(USER, dt.date(2026, 3, 2))
    assert entry is not None
    assert entry.sources == {"sleep_hours": "fitbit", "steps": "fitbit", "hrv_ms": "fitbit"}
    assert entry.hrv_method == "rmssd"
    # (26 + 9.6 + 30) / 80 * 100 = 82 exactly (12000 steps is over the 9990-step cap)
    assert entry.score == 82


def test_reimporting_the_same_data_changes_nothing(uow: InMemoryUnitOfWork) -> None:
    import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    before = (dict(uow.committed_rows), list(uow.outbox))
    summary = import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    assert (summary.imported, summary.updated, summary.unchanged) == (0, 0, 2)
    assert (dict(uow.committed_rows), list(uow.outbox)) == before


def test_an_import_never_overwrites_a_value_set_by_hand(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-01", {"steps": "7000"}, TODAY)
    summary = import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    entry = uow.entries.get(USER, dt.date(2026, 3, 1))
    assert entry is not None
    assert (entry.steps, entry.sources["steps"]) == (7000, "manual")
    assert (entry.sleep_hours, entry.sources["sleep_hours"]) == (
        Decimal(7),
        "fitbit",
    )  # a free field is filled
    assert summary.kept == {"steps": 1} and summary.skipped == {}
    assert summary.updated == 1
    assert uow.outbox[-2].fields == {"sleep_hours": Decimal(7)}


def test_an_import_never_overwrites_hrv_set_by_hand_even_with_another_method(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-02", {"hrv_ms": "50"}, TODAY)
    import_days(
        uow, USER, [DayRecord(dt.date(2026, 3, 2), {"hrv_ms": 48, "hrv_method": "sdnn"})], "fitbit", TODAY
    )
    entry = uow.entries.get(USER, dt.date(2026, 3, 2))
    assert entry is not None
    assert (entry.hrv_ms, entry.hrv_method, entry.sources["hrv_ms"]) == (Decimal(50), "rmssd", "manual")


def test_a_kept_manual_hrv_counts_as_one_kept_value_of_an_unchanged_day(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-02", {"hrv_ms": "50"}, TODAY)
    summary = import_days(
        uow, USER, [DayRecord(dt.date(2026, 3, 2), {"hrv_ms": 48, "hrv_method": "sdnn"})], "fitbit", TODAY
    )
    assert (summary.unchanged, summary.skipped, summary.kept) == (1, {}, {"hrv_ms": 1})


def test_an_import_skips_a_day_deleted_by_hand_and_says_how_to_bring_it_back(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-01", {"steps": "7000"}, TODAY)
    delete_entry(uow, USER, "2026-03-01", TODAY)
    summary = import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    tomb = uow.entries.get(USER, dt.date(2026, 3, 1))
    assert tomb is not None and tomb.deleted and tomb.steps is None
    assert summary.skipped == {"deleted by hand (bring it back with --restore-deleted)": 1}
    assert (summary.imported, summary.restored) == (1, 0)


def test_restore_deleted_brings_a_deleted_day_back_as_an_ordinary_set_mutation(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-01", {"steps": "7000"}, TODAY)
    delete_entry(uow, USER, "2026-03-01", TODAY)
    tomb_stamp = uow.outbox[-1].stamp
    summary = import_days(uow, USER, fitbit_days(), "fitbit", TODAY, restore_deleted=True)
    assert (summary.imported, summary.restored, summary.skipped) == (2, 1, {})
    entry = uow.entries.get(USER, dt.date(2026, 3, 1))
    assert entry is not None and not entry.deleted
    assert (entry.sleep_hours, entry.steps) == (Decimal(7), 8000)
    # Bringing back what the user deleted is done by hand: the values count as set by hand, so the
    # restore outranks the delete on every replica (a write of the importer's would lose to it).
    assert entry.sources == {"sleep_hours": "manual", "steps": "manual", "deleted": "manual"}
    assert [e.date for e in uow.entries.list(USER)] == [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]
    # the restore syncs like any edit: a `set` based on the delete's stamps
    restore = next(c for c in uow.outbox if c.date == dt.date(2026, 3, 1) and c.stamp > tomb_stamp)
    assert (restore.op, restore.source) == ("set", "manual")
    assert restore.fields == {"sleep_hours": Decimal(7), "steps": 8000}
    assert restore.base == {"sleep_hours": tomb_stamp, "steps": tomb_stamp}


def test_restoring_keeps_a_value_set_by_hand_after_the_deletion(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-01", {"sleep_hours": "5", "steps": "7000"}, TODAY)
    delete_entry(uow, USER, "2026-03-01", TODAY)
    log_entry(uow, USER, "2026-03-01", {"steps": "6500"}, TODAY)
    summary = import_days(uow, USER, fitbit_days(), "fitbit", TODAY, restore_deleted=True)
    entry = uow.entries.get(USER, dt.date(2026, 3, 1))
    assert entry is not None
    assert (entry.steps, entry.sources["steps"]) == (6500, "manual")
    assert (entry.sleep_hours, entry.sources["sleep_hours"]) == (Decimal(7), "manual")
    assert (summary.updated, summary.kept) == (1, {"steps": 1})


def test_fields_emptied_by_hand_stay_empty_and_are_counted_until_an_import_restores_them(
    uow: InMemoryUnitOfWork,
) -> None:
    """Deleted, then a note logged: the other fields were emptied by hand; an import says it left them
    (it does not claim to keep a value), and --restore-deleted fills them."""
    import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    delete_entry(uow, USER, "2026-03-01", TODAY)
    log_entry(uow, USER, "2026-03-01", {"note": "back"}, TODAY)
    log_entry(uow, USER, "2026-03-02", {}, TODAY, clear=["hrv_ms"])
    summary = import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    entry = uow.entries.get(USER, dt.date(2026, 3, 1))
    assert entry is not None
    assert (entry.sleep_hours, entry.steps, entry.note) == (None, None, "back")
    assert (summary.updated, summary.unchanged, summary.kept, summary.skipped) == (0, 2, {}, {})
    assert summary.left_empty == {"sleep_hours": 1, "steps": 1, "hrv_ms": 1}
    restored = import_days(uow, USER, fitbit_days(), "fitbit", TODAY, restore_deleted=True)
    entry = uow.entries.get(USER, dt.date(2026, 3, 1))
    assert entry is not None
    assert (entry.sleep_hours, entry.steps, entry.note) == (Decimal(7), 8000, "back")
    assert (restored.updated, restored.left_empty) == (2, {})
    cleared = uow.entries.get(USER, dt.date(2026, 3, 2))
    assert cleared is not None and cleared.hrv_ms == Decimal(48)


def test_an_unset_field_has_no_source(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, DAY, {"sleep_hours": "7", "steps": "9000", "hrv_ms": "50"}, TODAY)
    delete_entry(uow, USER, DAY, TODAY)
    tomb = uow.entries.get(USER, DAY)
    assert tomb is not None and tomb.sources == {"deleted": "manual"}  # the delete itself was by hand
    log_entry(uow, USER, DAY, {"note": "back", "steps": "100"}, TODAY)
    log_entry(uow, USER, DAY, {}, TODAY, clear=["steps"])
    entry = uow.entries.get(USER, DAY)
    assert entry is not None
    assert entry.sources == {"note": "manual", "deleted": "manual"}
    assert entry.as_json()["sources"] == {
        "sleep_hours": None, "hrv_ms": None, "steps": None, "weight_kg": None, "note": "manual",
    }
    assert entry.stamps["steps"] == uow.outbox[-1].stamp  # cleared: a stamp, but no source


def test_clearing_a_field_that_is_already_empty_changes_nothing(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, DAY, {"steps": "9000"}, TODAY)
    log_entry(uow, USER, DAY, {}, TODAY, clear=["note"])
    again = log_entry(uow, USER, DAY, {}, TODAY, clear=["note"])
    assert not again.changed
    assert [c.fields for c in uow.outbox] == [{"steps": 9000}, {"note": None}]


def test_read_is_always_imported_plus_updated_plus_unchanged_plus_skipped(uow: InMemoryUnitOfWork) -> None:
    log_entry(uow, USER, "2026-03-02", {"steps": "5000"}, TODAY)  # kept, and the day updated (sleep)
    log_entry(uow, USER, "2026-03-03", {"steps": "6000"}, TODAY)
    delete_entry(uow, USER, "2026-03-03", TODAY)
    import_days(uow, USER, [DayRecord(dt.date(2026, 3, 4), {"steps": 4000})], "fitbit", TODAY)
    log_entry(uow, USER, "2026-03-05", {"steps": "3000"}, TODAY)  # only a kept value: unchanged
    records = [
        DayRecord(dt.date(2026, 3, 1), {"steps": 1000}),  # new
        DayRecord(dt.date(2026, 3, 2), {"sleep_hours": "7", "steps": 2000}),
        DayRecord(dt.date(2026, 3, 3), {"steps": 3000}),  # deleted by hand
        DayRecord(dt.date(2026, 3, 4), {"steps": 4000}),  # unchanged
        DayRecord(dt.date(2026, 3, 5), {"steps": 3500}),
        DayRecord(dt.date(2026, 3, 6), {"steps": -1}),  # invalid
        DayRecord(dt.date(2026, 3, 7), {"steps": None}),  # no values
    ]
    summary = import_days(uow, USER, records, "fitbit", TODAY)
    assert (summary.read, summary.imported, summary.updated, summary.unchanged) == (7, 1, 1, 2)
    assert summary.skipped == {
        "deleted by hand (bring it back with --restore-deleted)": 1,
        "invalid steps (allowed 0 to 100000 steps)": 1,
        "no values": 1,
    }
    assert summary.kept == {"steps": 2}
    assert summary.read == summary.imported + summary.updated + summary.unchanged + sum(summary.skipped.values())
    assert summary.as_json() == {
        "source": "fitbit", "days_read": 7, "imported": 1, "restored": 0, "updated": 1, "unchanged": 2,
        "skipped": {
            "deleted by hand (bring it back with --restore-deleted)": 1,
            "invalid steps (allowed 0 to 100000 steps)": 1,
            "no values": 1,
        },
        "kept": {"steps": 2},
        "left_empty": {},
    }


def test_an_import_updates_values_from_an_earlier_import(uow: InMemoryUnitOfWork) -> None:
    import_days(uow, USER, fitbit_days(), "fitbit", TODAY)
    newer = [DayRecord(dt.date(2026, 3, 1), {"sleep_hours": "7", "steps": 8500})]
    summary = import_days(uow, USER, newer, "fitbit", TODAY)
    assert (summary.updated, summary.unchanged) == (1, 0)
    change = uow.outbox[-1]
    assert change.fields == {"steps": 8500}  # only what changed
    entry = uow.entries.get(USER, dt.date(2026, 3, 1))
    assert entry is not None and entry.stamps["steps"] == change.stamp
    assert entry.stamps["sleep_hours"] != change.stamp


def test_invalid_and_empty_imported_days_are_skipped_with_a_reason_and_the_rest_imported(
    uow: InMemoryUnitOfWork,
) -> None:
    records = [
        DayRecord(dt.date(2026, 3, 1), {"steps": 8000}),
        DayRecord(dt.date(2026, 3, 2), {"steps": -4}),
        DayRecord(dt.date(2026, 3, 3), {"sleep_hours": 30}),
        DayRecord(dt.date(2026, 3, 20), {"steps": 100}),  # more than a day ahead of TODAY
        DayRecord(dt.date(2026, 3, 4), {"steps": None}),
    ]
    summary = import_days(uow, USER, records, "fitbit", TODAY)
    assert summary.skipped == {
        "invalid steps (allowed 0 to 100000 steps)": 1,
        "invalid sleep_hours (allowed 0 to 24 h)": 1,
        "invalid date (allowed up to 2026-03-11)": 1,
        "no values": 1,
    }
    assert (summary.read, summary.imported) == (5, 1)
    assert [e.date for e in uow.entries.list(USER)] == [dt.date(2026, 3, 1)]


class Interrupted(Exception):
    pass


def test_a_failed_import_leaves_no_entry_and_no_mutation(uow: InMemoryUnitOfWork) -> None:
    def interrupt(read: int) -> None:
        if read == 2:  # after the first day has been staged
            raise Interrupted

    with pytest.raises(Interrupted):
        import_days(uow, USER, fitbit_days(), "fitbit", TODAY, progress=interrupt)
    assert uow.committed_rows == {}
    assert uow.outbox == []
    assert uow.entries.list(USER) == []
