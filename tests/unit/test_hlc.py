"""HLC stamps, `<ms, 16 digits>:<counter, 5 digits>:<client id>`: string order is clock order."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.hlc import MAX_COUNTER, HybridClock, Stamp, StampError

NODE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
nodes = st.text(alphabet=NODE_CHARS, min_size=1, max_size=12)
stamps = st.builds(
    Stamp,
    ms=st.integers(min_value=0, max_value=10**16 - 1),
    counter=st.integers(min_value=0, max_value=MAX_COUNTER),
    node=nodes,
)


class Wall:
    """A wall clock the test moves by hand (forwards or backwards)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def fixed(ms: int) -> Callable[[], int]:
    return lambda: ms


def test_a_stamp_is_written_fixed_width() -> None:
    assert str(Stamp(1764230400123, 3, "abc")) == "0001764230400123:00003:abc"
    assert str(Stamp(0, 0, "a")) == "0000000000000000:00000:a"


def test_a_stamp_reads_back_what_it_wrote() -> None:
    text = "0001764230400123:00003:client-1_A"
    assert Stamp.parse(text) == Stamp(1764230400123, 3, "client-1_A")
    assert str(Stamp.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "1764230400123:00003:abc",  # ms not 16 digits
        "0001764230400123:3:abc",  # counter not 5 digits
        "0001764230400123:00003:",  # no client id
        "0001764230400123:00003:a b",  # a space in the client id
        "0001764230400123:00003:a:b",
        "x001764230400123:00003:abc",
        "",
    ],
)
def test_text_that_is_not_a_stamp_is_rejected(text: str) -> None:
    with pytest.raises(StampError) as info:
        Stamp.parse(text)
    assert "hlc" in str(info.value)


def test_a_stamp_with_a_trailing_newline_is_rejected() -> None:
    with pytest.raises(StampError):
        Stamp.parse("0001764230400123:00003:abc\n")


@pytest.mark.parametrize("node", ["", "has space", "a:b", "x" * 65, "é"])
def test_a_clock_refuses_a_client_id_that_would_break_the_format(node: str) -> None:
    with pytest.raises(StampError):
        HybridClock(node, fixed(0))


def test_a_clock_follows_the_wall_clock_when_it_moves_forward() -> None:
    wall = Wall(1000)
    clock = HybridClock("dev", wall)
    assert clock.now() == Stamp(1000, 0, "dev")
    wall.ms = 1500
    assert clock.now() == Stamp(1500, 0, "dev")


def test_a_clock_counts_up_when_the_wall_clock_stands_still_or_goes_back() -> None:
    wall = Wall(1000)
    clock = HybridClock("dev", wall)
    clock.now()
    assert clock.now() == Stamp(1000, 1, "dev")
    wall.ms = 10
    assert clock.now() == Stamp(1000, 2, "dev")


def test_a_full_counter_moves_to_the_next_millisecond() -> None:
    clock = HybridClock("dev", fixed(5), last=Stamp(1000, MAX_COUNTER, "dev"))
    assert clock.now() == Stamp(1001, 0, "dev")


def test_a_clock_continues_after_the_last_stamp_it_is_given() -> None:
    clock = HybridClock("dev", fixed(0), last=Stamp(2000, 7, "dev"))
    assert clock.now() == Stamp(2000, 8, "dev")


def test_the_offset_from_the_server_corrects_the_wall_clock() -> None:
    clock = HybridClock("dev", fixed(1000), offset_ms=-400)
    assert clock.now() == Stamp(600, 0, "dev")


def test_observing_a_later_stamp_moves_the_clock_past_it() -> None:
    clock = HybridClock("dev", fixed(1000))
    remote = Stamp(5000, 4, "other")
    assert clock.observe(remote) == Stamp(5000, 5, "dev")
    assert clock.now() == Stamp(5000, 6, "dev")


def test_observing_an_equal_clock_from_a_node_that_sorts_later_still_moves_past_it() -> None:
    clock = HybridClock("aaa", fixed(0), last=Stamp(5000, 4, "aaa"))
    remote = Stamp(5000, 4, "zzz")
    assert clock.observe(remote) > remote


# --- properties --------------------------------------------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("now"), st.integers(min_value=0, max_value=10**13)),
        st.tuples(st.just("observe"), stamps.filter(lambda s: s.ms < 10**13)),
    ),
    min_size=1,
    max_size=60,
)


@given(st.integers(min_value=0, max_value=10**13), steps, nodes)
def test_stamps_from_one_clock_strictly_increase_whatever_the_wall_clock_does(
    start: int, actions: list[tuple[str, object]], node: str
) -> None:
    wall = Wall(start)
    clock = HybridClock(node, wall)
    issued = [clock.now()]
    for kind, arg in actions:
        if kind == "now":
            assert isinstance(arg, int)
            wall.ms = arg
            issued.append(clock.now())
        else:
            assert isinstance(arg, Stamp)
            issued.append(clock.observe(arg))
    for earlier, later in itertools.pairwise(issued):
        assert (earlier.ms, earlier.counter) < (later.ms, later.counter)
        assert str(earlier) < str(later)
    assert all(s.node == node and 0 <= s.counter <= MAX_COUNTER for s in issued)


@given(stamps, stamps)
def test_string_order_of_stamps_is_their_tuple_order(a: Stamp, b: Stamp) -> None:
    as_tuples = (a.ms, a.counter, a.node) < (b.ms, b.counter, b.node)
    assert (str(a) < str(b)) == as_tuples
    assert (a < b) == as_tuples
    assert (str(a) == str(b)) == (a == b)
    assert len(str(a)) == 16 + 1 + 5 + 1 + len(a.node)


@given(stamps)
def test_every_stamp_parses_back_to_itself(stamp: Stamp) -> None:
    assert Stamp.parse(str(stamp)) == stamp


@given(st.integers(min_value=0, max_value=10**13), stamps.filter(lambda s: s.ms < 10**13), nodes)
def test_after_observing_a_stamp_the_next_stamps_are_greater_than_it(
    wall_ms: int, remote: Stamp, node: str
) -> None:
    clock = HybridClock(node, fixed(wall_ms))
    seen = clock.observe(remote)
    following = clock.now()
    assert (seen.ms, seen.counter) > (remote.ms, remote.counter)
    assert (following.ms, following.counter) > (remote.ms, remote.counter)
    assert str(following) > str(remote)
