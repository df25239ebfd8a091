"""A sync server in process, on `httpx.MockTransport`, made of the real protocol code: the push contract
of `sync.wire` and the merge of `sync.merge` (what the cloud server runs on every push), and the shape
messages of `pulse_server.shapes.protocol`. Its store is a dict, its shape log a list, its clock the
caller's: a device's whole sync engine (`pulse_cli.agent.upstream.Upstream(transport=server.transport)`)
runs against it in milliseconds, with no Postgres and no process.

What it leaves out, on purpose: coaches and grants, the conflict audit and erasures (answered empty),
live requests are answered at once (up to date), and one user. What it must keep is the wire: the same answers, results
and messages as the cloud server (docs/push-protocol.md, docs/shape-protocol.md).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from pulse_core.entry import DELETED, MERGE_FIELDS, Entry
from pulse_core.errors import ValidationError
from pulse_core.rules import rules_document
from pulse_server.shapes import protocol
from sync.errors import PushRefused
from sync.hlc import SKEW_LIMIT_MS  # the cloud server's default (PULSE_CLOCK_SKEW_LIMIT_MS)
from sync.merge import apply_mutation
from sync.wire import (
    MAX_BATCH,
    Arrival,
    MutationResult,
    check_batch,
    mutation_digest,
    parse_mutation,
    parse_push_body,
    push_response,
    refusal,
    replay,
)

STAMPED = (*MERGE_FIELDS, DELETED)
CENTS = Decimal("0.01")
Json = dict[str, Any]


@dataclass
class Change:
    position: int
    txid: int
    operation: str
    value: dict[str, str | None]


@dataclass
class FakeSyncServer:
    now_ms: Callable[[], int]
    username: str = "ana"
    password: str = "correct horse battery"
    user_id: int = 7
    entries: dict[dt.date, Entry] = field(default_factory=dict)
    recorded: dict[tuple[str, int], tuple[MutationResult, str]] = field(default_factory=dict)
    log: list[Change] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    handle: str = field(default_factory=lambda: f"fake-{secrets.token_hex(4)}")
    requests: list[str] = field(default_factory=list)  # "METHOD /path", in order
    _txid: int = 1000

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.answer)

    def token(self) -> str:
        token = secrets.token_hex(8)
        self.tokens.add(token)
        return token

    # -- routing ---------------------------------------------------------------------------------------
    def answer(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.requests.append(f"{method} {path}")
        if (method, path) == ("GET", "/healthz"):
            return httpx.Response(200, json={"status": "ok"})
        if (method, path) == ("GET", "/v1/rules"):
            return httpx.Response(200, json=rules_document())
        if (method, path) == ("POST", "/v1/auth/token"):
            return self._sign_in(json.loads(request.content))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            return _error(401, "unauthorized", "authorization: the token is invalid, expired or revoked; log in again")
        routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {
            ("GET", "/v1/me"): lambda _: httpx.Response(200, json={
                "username": self.username, "role": "athlete", "server_time_ms": self.now_ms()}),
            ("POST", "/v1/sync/push"): self._push,
            ("GET", "/v1/sync/high-water"): self._high_water,
            ("GET", "/v1/conflicts"): lambda r: httpx.Response(200, json={
                "conflicts": [], "version": int(r.url.params.get("after_version") or 0)}),
            ("POST", "/v1/conflicts/dismiss"): lambda _: httpx.Response(204),
            ("GET", "/v1/erasures"): lambda _: httpx.Response(200, json={"erasures": []}),
            ("GET", "/v1/shape"): self._shape,
        }
        route = routes.get((method, path))
        return route(request) if route else _error(404, "not_found", f"{method} {path}: no such route")

    def _sign_in(self, body: Json) -> httpx.Response:
        if body.get("username") != self.username or body.get("password") != self.password:
            return _error(401, "unauthorized", "username or password is wrong")
        return httpx.Response(200, json={"access_token": self.token(), "token_type": "bearer",
                                         "expires_at": "2100-01-01T00:00:00+00:00"})

    # -- push: the contract of sync.wire, the merge of sync.merge ---------------------------------------
    def _push(self, request: httpx.Request) -> httpx.Response:
        try:
            body = parse_push_body(request.content)
            check_batch(body, MAX_BATCH)
        except PushRefused as exc:
            return _error(exc.status, exc.code, exc.message)
        server_ms = self.now_ms()
        today = dt.datetime.fromtimestamp(server_ms / 1000 + (body.utc_offset_min or 0) * 60, dt.UTC).date()
        before = self._high_water_of(body.client_id)
        results, touched = [], set()
        arrival = Arrival(server_ms, SKEW_LIMIT_MS)
        for raw in body.mutations:
            result = self._apply(body.client_id, raw, arrival, today, touched)
            results.append(result)
        txid = lsn = None
        if touched:
            self._txid += 1
            for day in sorted(touched):
                self._log(day, self._txid)
            txid, lsn = str(self._txid), str(len(self.log))
        return httpx.Response(200, json=push_response(server_ms, txid, lsn, MAX_BATCH, before, results))

    def _apply(
        self, client_id: str, raw: Json, arrival: Arrival, today: dt.date, touched: set[dt.date]
    ) -> MutationResult:
        seq, digest = int(raw["seq"]), mutation_digest(raw)
        again = replay(seq, digest, client_id, self.recorded.get((client_id, seq)), None)
        if again is not None:
            return again
        try:
            mutation = parse_mutation(raw, client_id, today)
        except ValidationError as exc:
            result = refusal(seq, exc)
            if result["status"] == "held":
                return result  # not recorded: welcome once its day comes
        else:
            entry = self.entries.setdefault(mutation.date, Entry(user=str(self.user_id), date=mutation.date))
            result, _conflicts, _clamped = apply_mutation(entry, mutation, arrival)
            touched.add(mutation.date)
        self.recorded[(client_id, seq)] = (result, digest)
        return result

    def _high_water_of(self, client_id: str) -> int | None:
        return max((seq for cid, seq in self.recorded if cid == client_id), default=None)

    def _high_water(self, request: httpx.Request) -> httpx.Response:
        ids = request.url.params.get_list("client_id")
        return httpx.Response(200, json={"high_water": {cid: self._high_water_of(cid) for cid in ids}})

    # -- the shape: the cloud server's messages ---------------------------------------------------------
    def _log(self, day: dt.date, txid: int) -> None:
        self.log.append(Change(len(self.log) + 1, txid, "update", self.row(self.entries[day])))

    def row(self, entry: Entry) -> dict[str, str | None]:
        """The entry as the shape carries it: the default columns in Postgres text format."""
        values: dict[str, Any] = {
            "user_id": self.user_id, "date": entry.date.isoformat(), "username": self.username,
            "sleep_hours": entry.sleep_hours, "hrv_ms": entry.hrv_ms, "hrv_method": entry.hrv_method,
            "steps": entry.steps, "weight_kg": entry.weight_kg, "note": entry.note, "score": entry.score,
            "score_version": entry.score_version, "deleted": "t" if entry.deleted else "f",
        }
        for name in STAMPED:
            values[f"{name}_hlc"], values[f"{name}_src"] = entry.stamps.get(name), entry.sources.get(name)
        text = {column: _text(values.get(column)) for column in protocol.ROW_COLUMNS}
        return protocol.shape_value(text, self.username, protocol.DEFAULT_COLUMNS)

    def _shape(self, request: httpx.Request) -> httpx.Response:
        query = request.url.params
        offset, live = query.get("offset", ""), query.get("live") == "true"
        if offset not in ("-1", "now") and query.get("handle") != self.handle:
            return httpx.Response(409, json=[{"headers": {"control": "must-refetch"}}],
                                  headers={"electric-handle": self.handle})
        head = len(self.log)
        headers = {"electric-handle": self.handle, "electric-offset": f"{head}_0"}
        if live:
            headers["electric-cursor"] = str(self.now_ms())
        else:
            headers["electric-schema"] = json.dumps(protocol.SCHEMA)
        if offset == "-1":
            messages = [protocol.change_message("insert", self.row(e)) for _, e in sorted(self.entries.items())]
            return httpx.Response(200, json=[*messages, {"headers": {"control": "snapshot-end"}}], headers=headers)
        after = head if offset == "now" else int(offset.split("_")[0])
        messages = [protocol.change_message(c.operation, c.value, {"lsn": str(c.position), "op_position": 0,
                                                                   "txids": [c.txid]})
                    for c in self.log[after:]]
        headers["electric-up-to-date"] = ""
        up_to_date = {"headers": {"control": "up-to-date", "global_last_seen_lsn": str(head)}}
        return httpx.Response(200, json=[*messages, up_to_date], headers=headers)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return str(value.quantize(CENTS))  # numeric(5,2) in Postgres text format: "7.50"
    return str(value)


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})
