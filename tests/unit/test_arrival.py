"""How a receiver takes the stamps of one push (sync.wire.Arrival): clamped stamps keep the order of their
seqs, bases follow what a stamp became, and a mutation rolled back gives its place up."""

from __future__ import annotations

from sync.hlc import Stamp
from sync.wire import Arrival

NOW = 1_780_000_000_000
LIMIT = 60_000
AHEAD = NOW + 300_000  # a device five minutes fast


def at(ms: int, counter: int = 0, node: str = "dev") -> Stamp:
    return Stamp(ms, counter, node)


def test_stamps_within_the_limit_are_kept_as_sent() -> None:
    arrival = Arrival(NOW, LIMIT)
    assert arrival.take(1, at(NOW + 59_000)) == (at(NOW + 59_000), False)
    assert arrival.take(2, at(NOW - 5)) == (at(NOW - 5), False)


def test_clamped_stamps_of_increasing_seqs_stay_distinct_and_in_order() -> None:
    arrival = Arrival(NOW, LIMIT)
    taken = [arrival.take(seq, at(AHEAD + seq))[0] for seq in range(1, 6)]  # each clamps to counter 0
    assert taken == [at(NOW, n) for n in range(5)]


def test_a_clamped_stamp_goes_after_a_kept_one_of_a_lower_seq() -> None:
    arrival = Arrival(NOW, LIMIT)
    arrival.take(1, at(NOW + 30_000))  # within the limit: kept, half a minute ahead
    assert arrival.take(2, at(AHEAD)) == (at(NOW + 30_000, 1), True)


def test_out_of_order_only_lower_seqs_count() -> None:
    arrival = Arrival(NOW, LIMIT)
    assert arrival.take(5, at(AHEAD, 3))[0] == at(NOW, 3)
    assert arrival.take(3, at(AHEAD, 1))[0] == at(NOW, 1)  # seq 5 is later: not waited for
    assert arrival.take(4, at(AHEAD, 0))[0] == at(NOW, 2)  # after seq 3's, the latest of the lower seqs


def test_a_base_names_what_an_earlier_stamp_of_the_push_became() -> None:
    arrival = Arrival(NOW, LIMIT)
    first = at(AHEAD)
    taken, _ = arrival.take(1, first)
    assert arrival.base({"steps": str(first), "note": None, "sleep_hours": "other"}) == {
        "steps": str(taken), "note": None, "sleep_hours": "other"}


def test_a_forgotten_mutation_gives_its_place_and_its_name_up() -> None:
    arrival = Arrival(NOW, LIMIT)
    arrival.take(1, at(AHEAD))
    second = at(AHEAD + 10)
    assert arrival.take(2, second)[0] == at(NOW, 1)
    arrival.forget(2)
    assert arrival.base({"steps": str(second)}) == {"steps": str(second)}
    assert arrival.take(3, at(AHEAD + 20))[0] == at(NOW, 1)
