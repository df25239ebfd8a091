"""Hybrid logical clock stamps, written fixed-width so that comparing strings compares clocks.

`<ms since epoch, 16 digits>:<counter, 5 digits>:<client_id>`; the client id breaks ties, so the
order is total (docs/push-protocol.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_COUNTER = 99_999
# A stamp further ahead of the receiver's clock than this is clamped to it (docs/push-protocol.md,
# invariant 6): the cloud server's default, the device relay's limit, the device's own check.
SKEW_LIMIT_MS = 60_000
# A client id, which a stamp ends with: pushes name their client with it too (sync.wire).
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STAMP = re.compile(rf"^(\d{{16}}):(\d{{5}}):({CLIENT_ID.pattern})$")


class StampError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Stamp:
    ms: int
    counter: int
    node: str

    def __str__(self) -> str:
        return f"{self.ms:016d}:{self.counter:05d}:{self.node}"

    @classmethod
    def parse(cls, text: str) -> Stamp:
        match = _STAMP.fullmatch(text)
        if match is None:
            raise StampError(f"hlc: {text!r} is not a stamp (allowed <16 digits>:<5 digits>:<client id>)")
        return cls(int(match[1]), int(match[2]), match[3])


class HybridClock:
    """Issues stamps later than every stamp it issued or observed, close to wall-clock time.

    `wall` returns milliseconds since the epoch; `offset_ms` corrects it by what the server said
    (docs/push-protocol.md, clock sanity).
    """

    def __init__(
        self, node: str, wall: Callable[[], int], last: Stamp | None = None, offset_ms: int = 0
    ) -> None:
        if not CLIENT_ID.fullmatch(node):
            raise StampError(f"client_id: {node!r} is not valid (allowed 1-64 of A-Z a-z 0-9 _ -)")
        self.node = node
        self.wall = wall
        self.offset_ms = offset_ms
        self.last = last or Stamp(0, 0, node)

    def _advance(self, floor_ms: int, floor_counter: int) -> Stamp:
        now = self.wall() + self.offset_ms
        if now > floor_ms:
            stamp = Stamp(now, 0, self.node)
        elif floor_counter < MAX_COUNTER:
            stamp = Stamp(floor_ms, floor_counter + 1, self.node)
        else:
            stamp = Stamp(floor_ms + 1, 0, self.node)
        self.last = stamp
        return stamp

    def now(self) -> Stamp:
        """A stamp for a local event."""
        return self._advance(self.last.ms, self.last.counter)

    def observe(self, remote: Stamp) -> Stamp:
        """Take in a stamp seen from elsewhere, so later local stamps sort after it."""
        if (remote.ms, remote.counter) > (self.last.ms, self.last.counter):
            return self._advance(remote.ms, remote.counter)
        return self.now()
