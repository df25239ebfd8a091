"""Erasure over REST: an athlete erases their own entries of a range of days; every user fetches the
erasures of the entries they hold (their own; a coach's granting athletes'), to drop the same days
(docs/erasure.md)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query

from pulse_server import erasure
from pulse_server.api.deps import Athlete, ClockDep, CurrentUser, DbDep
from pulse_server.api.schemas import ErasedOut, ErasuresOut
from pulse_server.shapes.scope import resolve_scope
from sync.erasure import parse_range

router = APIRouter(prefix="/v1", tags=["erasure"])


@router.delete("/me/entries", response_model=ErasedOut)
def erase_own_entries(
    user: Athlete,
    db: DbDep,
    clock: ClockDep,
    start: Annotated[str | None, Query(alias="from", description="First day erased, YYYY-MM-DD (default: the first)")]
    = None,
    end: Annotated[str | None, Query(alias="to", description="Last day erased, YYYY-MM-DD (default: the last)")]
    = None,
) -> dict[str, Any]:
    """Erase your entries from `from` to `to` (inclusive; leave either out for an open end, both for every
    day): from the server now, with their conflict audit and exactly-once results, and from each of your
    devices and your coaches' at their next sync. Writes to those days made before now are refused. The
    answer is the erasure record devices apply, and what was removed."""
    today = dt.datetime.fromtimestamp(clock() / 1000, dt.UTC).date()
    first, last = parse_range(start, end, today)
    done = db.run(lambda conn: erasure.erase(conn, user.id, user.username, first, last, clock()))
    return done.as_json()


@router.get("/erasures", response_model=ErasuresOut)
def list_erasures(
    user: CurrentUser,
    db: DbDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Only erasures with a higher id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> dict[str, Any]:
    """The erasures of the entries you may read (your own; a coach's athletes who grant access) with an id
    after `after`, oldest first: a device drops each one's days and asks after the `last` id next time."""

    def read(conn: Any) -> list[Any]:
        scope = resolve_scope(conn, user)
        return erasure.erasures_after(conn, dict(scope.usernames), after, limit)

    found = db.run(read)
    return {"erasures": [e.as_json() for e in found], "last": max((e.id for e in found), default=after)}
