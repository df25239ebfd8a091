"""Coach access, decided by the athlete: list, grant, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pulse_server import accounts
from pulse_server.api.deps import Athlete, CurrentUser, DbDep
from pulse_server.api.schemas import GrantRequest
from pulse_server.errors import ApiError

router = APIRouter(prefix="/v1/grants", tags=["grants"])


@router.get("")
def list_grants(user: CurrentUser, db: DbDep) -> dict[str, Any]:
    """An athlete sees the coaches they granted; a coach, the athletes who granted them."""
    with db.session() as session:
        return {"grants": accounts.grants_of(session, user)}


@router.post("", status_code=201)
def add_grant(body: GrantRequest, user: Athlete, db: DbDep) -> dict[str, Any]:
    """Let a coach read your entries."""
    with db.session() as session:
        coach = accounts.grant(session, user, body.coach)
        name = coach.username  # read while the session is open: the commit expired the row
    return {"coach": name}


@router.delete("/{coach}", status_code=204)
def remove_grant(coach: str, user: Athlete, db: DbDep) -> None:
    """Take a coach's access away."""
    with db.session() as session:
        if not accounts.revoke_grant(session, user, coach):
            raise ApiError(404, "not_found", f"coach: no grant to {coach}", field="coach", value=coach)
