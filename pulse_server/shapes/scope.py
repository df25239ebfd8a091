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


def shape_handle(definition: dict[str, Any], scope: Scope, log_id: str, generation: int) -> str:
    """Names the shape definition, the caller's scope and the build of the log. `log_id` is random per
    build (docs/shapes.md, "Self-healing"): a rebuilt log, also one rebuilt after its database was
    restored from a dump, hands out handles no client has ever held."""
    material = json.dumps([definition, sorted(scope.user_ids), scope.version, log_id], sort_keys=True)
    return f"{hashlib.sha256(material.encode()).hexdigest()[:20]}-{generation}"
