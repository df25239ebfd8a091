"""Request and response bodies. Field names are the ones used everywhere (docs/cli.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from pulse_core.rules import MANUAL
from sync.hlc import CLIENT_ID

CLIENT_ID_PATTERN = f"^{CLIENT_ID.pattern}$"  # a store's id on the wire (sync.hlc)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: str


class Me(BaseModel):
    username: str
    role: Literal["athlete", "coach"]
    server_time_ms: int | None = Field(default=None, description="The server's clock: devices learn their offset")
    account: str | None = Field(default=None, description=(
        "The account's id, never given to another: a device keeps it with the account's data, so that a name"
        " removed and given to someone else later is not taken for the account that held it"))


# A number (or its text) for pulse_core to check, so that 1.5 steps is a 422 not_an_integer as in a push.
# Strict, or pydantic would read `true` as 1 step; a JSON true is a wrong type: 400.
Number = StrictInt | StrictFloat | StrictStr


class EntryFields(BaseModel):
    """The fields a PUT sets; an explicit null clears a field. Values are checked by pulse_core."""

    model_config = ConfigDict(extra="forbid")
    sleep_hours: Number | None = None
    hrv_ms: Number | None = None
    hrv_method: Literal["rmssd", "sdnn"] | None = None
    steps: Number | None = None
    weight_kg: Number | None = None
    note: str | None = Field(default=None, max_length=1000)


class EntryOut(BaseModel):
    date: str
    sleep_hours: float | None
    hrv_ms: float | None
    hrv_method: str | None
    steps: int | None
    weight_kg: float | None
    note: str | None
    score: int | None
    score_version: int | None
    deleted: bool
    sources: dict[str, str | None]


class EntriesOut(BaseModel):
    user: str
    entries: list[EntryOut]


class WarningOut(BaseModel):
    code: str
    field: str
    value: Any
    message: str


class EntryWrite(BaseModel):
    entry: EntryOut
    warnings: list[WarningOut] = []
    status: Literal["applied", "conflict"]
    # The write's transaction id (a decimal string, as a push's): shape messages carry it in `txids`.
    txid: str | None = None


class MutationIn(BaseModel):
    """One mutation, checked for its form only; its meaning is checked per mutation (and rejected alone)."""

    seq: int = Field(ge=0, le=2**63 - 1)  # stored as a Postgres bigint: a larger one failed the whole batch
    date: Any = None
    op: Any = None
    fields: Any = None
    base: Any = None
    hlc: Any = None
    source: Any = MANUAL


class PushRequest(BaseModel):
    protocol: int
    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    mutations: list[MutationIn]
    utc_offset_min: int | None = Field(default=None, ge=-840, le=840,
                                       description="The device's zone now, minutes east of UTC: dates are judged"
                                       " against the user's local date (kept as the user's zone)")


class ErasureOut(BaseModel):
    id: int = Field(description="Increases with every erasure: devices ask for those after the last they applied")
    user: str
    from_: str | None = Field(alias="from", description="The first day erased (null: from the first)")
    to: str | None = Field(description="The last day erased (null: to the last)")
    erased_at_ms: int = Field(description="The server's clock at the erasure: writes stamped earlier are refused")
    whole_account: bool = Field(description="Every day, and the account's tokens and grants revoked")


class ErrorOut(BaseModel):
    code: str
    message: str
    field: str | None = None
    value: Any = None
    allowed: str | None = None
    erasure: ErasureOut | None = Field(default=None, description="With account_erased: the erasure to apply")


class ConflictOut(BaseModel):
    field: str
    kept: Any
    lost: Any
    kept_hlc: str | None
    lost_hlc: str | None
    rule: str


class MutationResult(BaseModel):
    seq: int
    status: Literal["applied", "conflict", "duplicate", "rejected", "clash", "held"]
    original_status: str | None = None
    pruned: bool | None = None  # a duplicate whose original result is past the retention window
    hlc: str | None = None
    clamped_from: str | None = None
    error: ErrorOut | None = None
    conflicts: list[ConflictOut] | None = None


class PushResponse(BaseModel):
    server_time_ms: int
    txid: str | None = Field(description="The commit's transaction id (decimal), null when no entry changed")
    lsn: str | None = Field(description="The WAL position read just before commit (decimal), null likewise")
    max_batch: int
    high_water: int | None = Field(description="The highest seq recorded for this client before this batch")
    results: list[MutationResult]


class HighWaterOut(BaseModel):
    high_water: dict[str, int | None]


class RefusedChange(BaseModel):
    seq: int
    status: Literal["rejected"]
    error: ErrorOut
    date: str
    op: str
    fields: dict[str, Any]
    base: dict[str, str | None]
    hlc: str


class RefusedOut(BaseModel):
    refused: list[RefusedChange] = Field(
        description="Changes of this client acknowledged earlier and refused since, each as its refusal with "
        "the change: always empty from the sync server (its push answers every refusal); from a device "
        "serving the app, the browser's changes it took that the sync server then refused (docs/pwa.md)")


class RefusedTaken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    seqs: list[int] = Field(min_length=1, max_length=1000)


class ConflictRecordOut(BaseModel):
    id: int
    version: int
    date: str
    client_id: str
    seq: int
    field: str
    kept: Any
    lost: Any
    kept_hlc: str | None
    lost_hlc: str | None
    rule: str
    clamped: bool
    created_at: str
    dismissed: bool
    state: Literal["open", "reasserted", "superseded", "dismissed"]


class ConflictsOut(BaseModel):
    conflicts: list[ConflictRecordOut]
    version: int = Field(description="The highest version returned (or the one asked after): ask after it next")


class DismissRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] = Field(min_length=1, max_length=1000)


class RemovedOut(BaseModel):
    entries: int
    conflicts: int
    results: int = Field(description="Exactly-once results (their seqs stay as high-water marks)")
    tokens: int = Field(description="Tokens revoked (a whole account)")
    grants: int = Field(description="Grants removed (a whole account)")


class ErasedOut(BaseModel):
    erasure: ErasureOut
    removed: RemovedOut


class ErasuresOut(BaseModel):
    erasures: list[ErasureOut]
    last: int = Field(description="The highest id returned (or the one asked after): ask after it next")


class GrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    coach: str = Field(min_length=1, max_length=64)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` written in place, for a route that documents a body it reads itself."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
