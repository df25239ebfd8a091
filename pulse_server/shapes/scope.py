"""Who can see which rows of a shape: the caller's own entries, or a coach's granting athletes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import psycopg

from pulse_server.accounts import Principal


@dataclass(frozen=True)
class Scope:
    usernames: dict[int, str]  # user id -> username, for every user whose rows are visible
    version: int = 0  # bumped by every grant or revoke that concerns this caller

    @property
    def user_ids(self) -> set[int]:
        return set(self.usernames)


def resolve_scope(conn: psycopg.Connection[Any], who: Principal) -> Scope:
    if not who.is_coach:
        return Scope({who.id: who.username})
    rows = conn.execute(
        "SELECT u.id, u.username FROM grants g JOIN users u ON u.id = g.athlete_id WHERE g.coach_id = %s",
        (who.id,),
    ).fetchall()
    version = conn.execute("SELECT version FROM scope_versions WHERE user_id = %s", (who.id,)).fetchone()
    return Scope({int(r[0]): r[1] for r in rows}, int(version[0]) if version else 0)


@dataclass(frozen=True)
class Origin:
    """The database the log comes from: a restored database must answer 409, not a silent gap."""

    system_identifier: str
    timeline: int
    log_id: str  # random per shape log: another database in the same cluster has another


def read_origin(conn: psycopg.Connection[Any]) -> Origin:
    sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
    log_id = conn.execute("SELECT log_id::text FROM shape_state WHERE id = 1").fetchone()
    assert sysid is not None and timeline is not None and log_id is not None
    return Origin(sysid[0], int(timeline[0]), log_id[0])


def shape_handle(definition: dict[str, Any], scope: Scope, origin: Origin, generation: int) -> str:
    """Names the shape definition, the caller's scope, the database and the log's generation."""
    material = json.dumps(
        [definition, sorted(scope.user_ids), scope.version, origin.system_identifier, origin.timeline, origin.log_id],
        sort_keys=True,
    )
    return f"{hashlib.sha256(material.encode()).hexdigest()[:20]}-{generation}"
