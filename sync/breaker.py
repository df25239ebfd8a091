"""A client-side circuit breaker whose state is plain data, so it survives between CLI runs.

After `threshold` failures in a row the breaker opens for `cooldown_s` (doubling up to `max_cooldown_s`
while failures continue); while open, callers answer at once ("offline: 3 changes queued") instead of
each waiting for a timeout. One call is let through when the cooldown ends (half-open).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class BreakerState:
    failures: int = 0
    open_until: float = 0.0
    cooldown_s: float = 0.0
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BreakerState:
        if not data:
            return cls()
        return cls(**{k: data[k] for k in ("failures", "open_until", "cooldown_s", "last_error") if k in data})


class ClientBreaker:
    def __init__(
        self, state: BreakerState, threshold: int = 1, cooldown_s: float = 15.0, max_cooldown_s: float = 300.0
    ) -> None:
        self.state = state
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s

    def is_open(self, now: float) -> bool:
        return now < self.state.open_until

    def name(self, now: float) -> str:
        if self.is_open(now):
            return "open"
        return "half-open" if self.state.failures >= self.threshold else "closed"

    def retry_in(self, now: float) -> float:
        return max(0.0, self.state.open_until - now)

    def success(self) -> None:
        self.state = BreakerState()

    def failure(self, now: float, error: str, retry_after_s: float = 0.0) -> None:
        state = self.state
        state.failures += 1
        state.last_error = error
        if state.failures >= self.threshold:
            state.cooldown_s = min(self.max_cooldown_s, max(self.base_cooldown_s, state.cooldown_s * 2))
            state.open_until = now + max(state.cooldown_s, retry_after_s)
