"""The Python every correct push runs per mutation, in process, with no I/O: checking, the digest, the merge.

Run from the repo root:

    .venv/bin/python bench/push_core_cost.py                 # 200 batches of 100 mutations, 5 repeats
    .venv/bin/python bench/push_core_cost.py --batches 50    # quicker

The batches are `bench/peers.py`'s (push_load's device, 100 `set` mutations a request on 100 distinct
days, 1-3 fields each), decoded from the JSON body as the server decodes it. Each step is timed alone
(CPU time, `time.process_time`), over every mutation of every batch, the best of --repeats:

  check   `sync.wire.parse_mutation` (pulse_core's rules for every field, the date against the user's
          today, the stamp) and the storable-text check: what the push answers `rejected` from.
  digest  `sync.wire.mutation_digest`: what tells a retried mutation from another store reusing the
          client id (docs/sync.md).
  merge   `sync.merge.apply_mutation` into the day's entry (a fresh day the first time, then the merged one):
          the field-by-field rule the devices run too.

These are the parts that the architecture puts in Python (pulse_core and sync, shared by the device and
the server) and that no query can do for the server. The sum is a lower bound of the server's CPU a
mutation; the HTTP request, the reads and the writes come on top. `bench/peers.py`'s floor turn gives
the rest: what it leaves a mutation, against what this costs, is how close to the raw limit a push can
come on this machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

from peers import PulseDevice

from pulse_core.entry import Entry
from pulse_server.push import _checkstorable
from sync.merge import apply_mutation
from sync.wire import Arrival, Mutation, mutation_digest, parse_mutation

BATCH = 100
SKEW_LIMIT_MS = 60_000


def batches(count: int) -> list[list[dict[str, Any]]]:
    """`count` request bodies of one device, decoded as the server decodes them."""
    days = [(dt.date(2024, 1, 1) + dt.timedelta(days=n)).isoformat() for n in range(366)]
    device = PulseDevice("token", "bench-core", BATCH, days, seed=7)
    return [json.loads(device.body())["mutations"] for _ in range(count)]


def timed(step: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=200, help="batches of 100 mutations (default 200)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each step; the best is shown (default 5)")
    args = parser.parse_args()
    raw = batches(args.batches)
    count = sum(len(b) for b in raw)
    client_id, today = "bench-core", dt.date(2025, 1, 1)
    now_ms = int(time.time() * 1000)

    def check() -> None:
        for batch in raw:
            for item in batch:
                _checkstorable(parse_mutation(item, client_id, today))

    parsed: list[Mutation] = [parse_mutation(item, client_id, today) for batch in raw for item in batch]

    def digest() -> None:
        for batch in raw:
            for item in batch:
                mutation_digest(item)

    def merge() -> None:
        entries: dict[str, Entry] = {}
        arrival = Arrival(now_ms, SKEW_LIMIT_MS)
        for m in parsed:
            entry = entries.get(m.date.isoformat())
            if entry is None:
                entry = entries[m.date.isoformat()] = Entry(user="1", date=m.date)
            apply_mutation(entry, m, arrival)

    steps = {"check": check, "digest": digest, "merge": merge}
    costs = {name: timed(step, args.repeats) / count * 1e6 for name, step in steps.items()}
    print(f"push_core_cost: {count:,} mutations ({args.batches} batches of {BATCH}), best of {args.repeats}")
    for name, us in costs.items():
        print(f"  {name:<7} {us:6.1f} us a mutation")
    print(f"  {'total':<7} {sum(costs.values()):6.1f} us a mutation (a lower bound of the server's CPU for one)")


if __name__ == "__main__":
    main()
