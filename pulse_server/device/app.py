"""`create_device_app`: the PWA and the endpoints it uses, over a `DeviceBackend`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse

from pulse_core.rules import rules_document
from pulse_server.api.content_type import JsonDeclared, require_json
from pulse_server.api.error_answers import install_error_handlers
from pulse_server.api.schemas import CLIENT_ID_PATTERN, DismissRequest, Me, RefusedTaken, TokenRequest, TokenResponse
from pulse_server.device import shape
from pulse_server.device.ports import DeviceBackend
from pulse_server.device.watch import HeadWatcher
from pulse_server.errors import ApiError, from_wire
from pulse_server.ratelimit import LoginThrottle, MemoryThrottleStore
from pulse_server.shapes.protocol import EXPOSE_HEADERS
from pulse_server.web import mount_pwa
from sync import wire
from sync.errors import PushRefused
from sync.wire import MAX_BATCH, check_batch, parse_push_body, push_response

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
MAX_REFUSED = 1000  # refusals a request lists: the app marks them, and asks again at its next exchange
MAX_BODY_BYTES = 1_048_576


def signed_in(request: Request) -> None:
    backend: DeviceBackend = request.app.state.backend
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not backend.authenticate(token.strip()):
        raise ApiError(401, "unauthorized", "authorization: a valid bearer token is required; sign in",
                       headers=UNAUTHORIZED)


SignedIn = Annotated[None, Depends(signed_in)]


def create_device_app(backend: DeviceBackend, throttle: LoginThrottle | None = None) -> FastAPI:
    watcher = HeadWatcher(backend.head)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher.start()
        yield
        await watcher.stop()

    app = FastAPI(title="NGX Pulse on this device", version="1", lifespan=lifespan,
                  description="The PWA's endpoints over the device's store (docs/pwa.md).")
    app.state.backend = backend
    app.state.watcher = watcher
    # One process serves this device: its sign-in counts live in memory, with the cloud server's policy.
    throttle = throttle or LoginThrottle(MemoryThrottleStore())

    @app.post("/v1/auth/token", response_model=TokenResponse, tags=["auth"])
    def issue_token(body: TokenRequest, request: Request) -> TokenResponse:
        """Sign in as the device's user, with that user's password on the sync server."""
        address = request.client.host if request.client else "-"
        throttle.check(body.username, address)
        signed = backend.sign_in(body.username, body.password)
        if signed is None:
            raise ApiError(401, "unauthorized", "username or password is wrong", headers=UNAUTHORIZED)
        throttle.succeeded(body.username, address)
        return TokenResponse(access_token=signed.token, expires_at=signed.expires_at)

    @app.get("/v1/me", response_model=Me, tags=["auth"])
    def me(_: SignedIn) -> Me:
        return Me(username=backend.username, role="coach" if backend.role == "coach" else "athlete",
                  server_time_ms=backend.now_ms(), account=backend.account_id())

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        """As the cloud server's: the web app."""
        return RedirectResponse("/app/", status_code=307)

    @app.get("/v1/rules", tags=["meta"])
    def rules() -> dict[str, Any]:
        """The same rules document as the cloud server's."""
        return rules_document()

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/sync/push", tags=["sync"], response_model=None)  # the answer is built and typed by sync.wire
    async def push(request: Request, _: SignedIn) -> wire.PushResponse:
        """The push endpoint of docs/push-protocol.md, with the cloud server's checks; the device relays
        what it accepts upstream."""
        body = await _push_body(request)
        pushed = await run_in_threadpool(backend.push, body.client_id, body.mutations)
        position = str(pushed.position)  # the device's shape log position: its txid and lsn alike
        return push_response(pushed.server_time_ms, position, position, MAX_BATCH, pushed.high_water, pushed.results)

    @app.get("/v1/conflicts", tags=["entries"])
    def conflicts(
        _: SignedIn, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        after_version: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        found = backend.conflicts(limit, after_version)
        return {"conflicts": found, "version": max((c["version"] for c in found), default=after_version or 0)}

    @app.post("/v1/conflicts/dismiss", status_code=204, tags=["entries"])
    def dismiss_conflicts(body: DismissRequest, _: SignedIn, _json: JsonDeclared) -> None:
        backend.dismiss_conflicts(body.ids)

    @app.get("/v1/sync/refused", tags=["sync"])
    def refused(
        _: SignedIn, client_id: Annotated[str, Query(pattern=CLIENT_ID_PATTERN)],
    ) -> dict[str, Any]:
        """The browser's changes this device took and the sync server refused since, not yet taken back by
        the browser, each with the change (docs/pwa.md)."""
        return {"refused": backend.refused(client_id, MAX_REFUSED)}

    @app.post("/v1/sync/refused/taken", status_code=204, tags=["sync"])
    def refused_taken(body: RefusedTaken, _: SignedIn, _json: JsonDeclared) -> None:
        """The browser holds these refused changes now, to fix or discard there: they leave this device's
        own refusals (`pulse rejected`) and are not listed again."""
        backend.hand_back(body.client_id, body.seqs)

    @app.get("/v1/erasures", tags=["erasure"])
    def erasures(
        _: SignedIn, after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> dict[str, Any]:
        """The erasures of the user's entries this device applied (docs/erasure.md)."""
        found = backend.erasures(after, limit)
        return {"erasures": found, "last": max((e["id"] for e in found), default=after)}

    app.include_router(shape.router)
    mount_pwa(app)
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"],
        expose_headers=[h.strip() for h in EXPOSE_HEADERS.split(",")], max_age=86400,
    )
    return app


async def _push_body(request: Request) -> wire.PushBody:
    """A push's body, checked as the cloud server checks it (`sync.wire`), after the caller's token."""
    require_json(request.headers.get("content-type"))
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"body: larger than {MAX_BODY_BYTES} bytes",
                       allowed=f"at most {MAX_BODY_BYTES} bytes")
    try:
        body = parse_push_body(raw)
        check_batch(body, MAX_BATCH)
    except PushRefused as exc:
        raise from_wire(exc) from None
    return body
