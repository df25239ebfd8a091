"""`settle_heap` (pulse_server/memory.py), run by each server worker once its app is built: start-up's
objects are frozen out of the collector's sight and young collections come less often, so that a full
collection with thousands of held long polls walks what they hold, not the whole heap."""

from __future__ import annotations

import gc

from pulse_server.memory import COLLECT_EVERY, settle_heap


def test_settle_heap_freezes_what_start_up_made_and_collects_young_objects_less_often() -> None:
    threshold = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    try:
        settle_heap()
        frozen = gc.get_freeze_count()
        settled = gc.get_threshold()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert frozen > 10_000  # this test process's modules and objects, as a worker's would be
    assert settled == (COLLECT_EVERY, *threshold[1:])
    assert threshold[0] < COLLECT_EVERY
