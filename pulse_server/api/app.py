"""`create_app`: the FastAPI application, wired by the server process's one bootstrap."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pulse_core.errors import PulseError
from pulse_server import maintenance
from pulse_server.api import (
    openapi,
    routes_auth,
    routes_entries,
    routes_erasure,
    routes_grants,
    routes_meta,
    routes_sync,
)
from pulse_server.api.deps import bearer_from
from pulse_server.api.error_answers import install_error_handlers, json_error
from pulse_server.api.routes_checksums import router as checksums_router
from pulse_server.db.database import Database, DatabaseUnavailable
from pulse_server.errors import ApiError, from_domain
from pulse_server.logs import request_id, user_id
from pulse_server.memory import settle_heap
from pulse_server.metrics import Metrics
from pulse_server.push import results_json
from pulse_server.ratelimit import ConcurrencyGate, LoginThrottle, PostgresThrottleStore, ThrottlePolicy
from pulse_server.replication.health import ReplicationHealth
from pulse_server.replication.reader import ReplicationReader
from pulse_server.settings import Settings, libpq_url
from pulse_server.shapes import route as shape_route
from pulse_server.shapes.log import LogWatcher
from pulse_server.shapes.protocol import EXPOSE_HEADERS
from pulse_server.web import mount_pwa

log = logging.getLogger("pulse.http")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BodyLimit:
    """Refuse request bodies over the limit (413) before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = ApiError(413, "payload_too_large", f"body: larger than {self.max_bytes} bytes",
                             allowed=f"at most {self.max_bytes} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await json_error(too_large)(scope, receive, send)
            return
        # A streamed (chunked) body is read here, at most max_bytes of it, and replayed to the app: an
        # error raised from inside `receive` would reach FastAPI wrapped, and come out as a 400.
        buffered: list[Message] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            buffered.append(message)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await json_error(too_large)(scope, receive, send)
                return
            more = message["type"] == "http.request" and bool(message.get("more_body", False))

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)


def create_app(
    settings: Settings | None = None,
    clock: Callable[[], int] = wall_ms,
    database: Database | None = None,
) -> FastAPI:
    settings = settings or Settings()
    db = database or Database(settings)

    metrics = Metrics()
    background = Background(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        app.state.watcher = background.start(loop)
        app.state.health = background.health
        restore = _end_held_requests_on_sigterm(loop, background.closing)
        settle_heap()
        yield
        restore()
        background.stop()
        db.dispose()  # on shutdown: close the pool

    app = FastAPI(
        title="NGX Pulse sync server",
        version="1",
        description="Accounts, entries and the exactly-once push endpoint. Errors: docs/api.md.",
        lifespan=lifespan,
        **_NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.clock = clock
    app.state.metrics = metrics
    app.state.background = background
    app.state.login_throttle = LoginThrottle(PostgresThrottleStore(db.run), throttle_policy(settings))
    app.state.push_gate = ConcurrencyGate(min(settings.push_concurrency, settings.pool_size), settings.push_queue_limit)
    for module in (routes_auth, routes_entries, routes_erasure, routes_sync, routes_grants, routes_meta):
        app.include_router(module.router)
    app.include_router(shape_route.router)
    app.include_router(checksums_router)
    mount_pwa(app, settings.web_root)
    _install_error_handlers(app)
    openapi.install(app)

    app.add_middleware(Observe, metrics=app.state.metrics)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["*"], expose_headers=[h.strip() for h in EXPOSE_HEADERS.split(",")], max_age=86400,
    )
    app.add_middleware(PushFastPath, state=app.state, max_bytes=settings.max_body_bytes)
    app.add_middleware(ShapeFastPath, metrics=app.state.metrics, handlers=app.exception_handlers)
    return app


PUSH_ROUTE = "/v1/sync/push"
# FastAPI's built-in OpenTelemetry (versions that have it) looks up the global providers on every request,
# in front of every route and the push fast path; the server exports none (its metrics: /metrics).
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)


class RouteRecord:
    """What `Observe` records of a request (its request id, access log line and latency metric), for the one
    route a fast path answers in front of it: `begin` at the request, `wrap` its `send`, `finish` after."""

    def __init__(self, metrics: Metrics, method: str, route: str) -> None:
        self.metrics = metrics
        self.method = method
        self.route = route
        self._latency: dict[int, Any] = {}  # the histogram's child per status, looked up once

    def begin(self, rid: bytes | None) -> Recording:
        return Recording(self, ((rid or b"").decode("latin-1") or os.urandom(16).hex())[:64])

    def latency(self, status: int) -> Any:
        child = self._latency.get(status)
        if child is None:
            child = self._latency[status] = self.metrics.latency.labels(self.method, self.route, str(status))
        return child


class Recording:
    """One request of a `RouteRecord`'s route."""

    def __init__(self, record: RouteRecord, rid: str) -> None:
        self.record = record
        self.rid = rid
        request_id.set(rid)
        user_id.set(None)
        self.started = time.perf_counter()
        self.status = 500

    def wrap(self, send: Send) -> Send:
        """`send`, noting the status and adding the x-request-id header."""

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", self.rid.encode("latin-1"))]
            await send(message)

        return send_with_id

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        self.record.latency(self.status).observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info("request", extra={"fields": {"method": self.record.method, "route": self.record.route,
                                                  "status": self.status, "ms": round(elapsed * 1000, 2)}})


class PushFastPath:
    """`POST /v1/sync/push` without an Origin header, answered here, in front of the middleware and
    routing stack that cost a single-mutation push as much CPU as its own work. The same answer as
    the route (`routes_sync.answer_push`), the same request id, access log line, latency metric, body
    limit and error bodies as `Observe`, `BodyLimit` and the error handlers give it; a request from a
    browser (Origin: CORS) and every other request go through the stack. An unexpected exception is
    raised to the server error handler outside, as from the route."""

    def __init__(self, app: ASGIApp, state: Any, max_bytes: int) -> None:
        self.app = app
        self.state = state
        self.max_bytes = max_bytes
        self.record = RouteRecord(state.metrics, "POST", PUSH_ROUTE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PUSH_ROUTE or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = declared = rid = content_type = None
        for name, value in scope["headers"]:
            if name == b"origin":
                await self.app(scope, receive, send)
                return
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-length" and declared is None:
                declared = value
            elif name == b"x-request-id" and rid is None:
                rid = value
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        recording = self.record.begin(rid)
        try:
            response = await self._answer(authorization, declared, content_type, receive)
            if response is not None:
                await response(scope, receive, recording.wrap(send))
        finally:
            recording.finish()

    async def _answer(
        self, authorization: bytes | None, declared: bytes | None, content_type: str | None, receive: Receive
    ) -> Response | None:
        too_large = ApiError(413, "payload_too_large", f"body: larger than {self.max_bytes} bytes",
                             allowed=f"at most {self.max_bytes} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return json_error(too_large)
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return json_error(too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            token = bearer_from((authorization or b"").decode("latin-1"))
            _, answer = await routes_sync.answer_push(self.state, token, b"".join(chunks), content_type)
        except ApiError as exc:
            return json_error(exc)
        except PulseError as exc:
            return json_error(from_domain(exc))
        except DatabaseUnavailable as exc:
            return unavailable_answer(exc)
        return Response(results_json(answer), media_type="application/json")


SHAPE_ROUTE = "/v1/shape"


class ShapeFastPath:
    """`GET /v1/shape` live requests (`live=true` in the query) without an Origin header, handed to the
    shape route here, in front of the middleware and routing stack, which cost a live request renewal
    more CPU than the route itself (py-spy, bench/shape_latency.py). The same answer as through the stack
    (the route itself answers; the app's exception handlers map what it raises, as FastAPI's would), the
    same request id, access log line and latency metric as `Observe`; a GET has no body for `BodyLimit`
    to limit. A request from a browser (Origin: CORS) and every other request go through the stack. An
    exception no handler maps is raised to the server error handler outside, as from the route."""

    def __init__(self, app: ASGIApp, metrics: Metrics, handlers: dict[Any, Callable[..., Any]]) -> None:
        self.app = app
        self.handlers = handlers
        self.record = RouteRecord(metrics, "GET", SHAPE_ROUTE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != SHAPE_ROUTE or scope["method"] != "GET"
                or b"live=true" not in scope["query_string"]):
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"origin":
                await self.app(scope, receive, send)
                return
            if name == b"x-request-id" and rid is None:
                rid = value
        recording = self.record.begin(rid)
        try:
            request = Request(scope, receive)
            try:
                response = await shape_route.shape(request)
            except Exception as exc:
                handler = self._handler(exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
            await response(scope, receive, recording.wrap(send))
        finally:
            recording.finish()

    def _handler(self, exc: Exception) -> Callable[..., Any] | None:
        """The app's handler for this exception, as FastAPI's exception middleware finds it (a catch-all
        for Exception is the server error handler's, outside)."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in self.handlers:
                return self.handlers[cls]
        return None


class Observe:
    """Request id, access log line and latency histogram, as plain ASGI (a BaseHTTPMiddleware would
    hide client disconnects from held live requests)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = (headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex)[:64]
        request_id.set(rid)
        user_id.set(None)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            template = getattr(scope.get("route"), "path", "unmatched")
            user_id.set(scope.get("state", {}).get("user_id"))
            self.metrics.latency.labels(scope["method"], template, str(status)).observe(elapsed)
            log.info("request", extra={"fields": {"method": scope["method"], "route": template, "status": status,
                                                  "ms": round(elapsed * 1000, 2)}})


class Background:
    """The replication reader, the shape log watcher (which also reads the slot's status for readiness)
    and the maintenance schedule: threads of this process, stopped with it."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop_event = threading.Event()
        self.reader: ReplicationReader | None = None
        self.watcher: LogWatcher | None = None
        self.schedule: maintenance.Schedule | None = None
        self.health = ReplicationHealth(watched=settings.shape_watcher)

    def start(self, loop: asyncio.AbstractEventLoop) -> LogWatcher | None:
        dsn = libpq_url(self.settings.database_url)
        if self.settings.replication_reader:
            self.reader = self.health.reader = ReplicationReader(
                dsn, on_rebuild=lambda _: self.metrics.replication_rebuilds.inc(),
                wait_s=self.settings.replication_idle_wait_s)
            threading.Thread(target=self.reader.run, args=(self.stop_event,), name="replication-reader",
                             daemon=True).start()
        if self.settings.shape_watcher:
            watcher = self.watcher = LogWatcher(dsn, health=self.health)
            watcher.start(loop)
            if self.reader is not None:  # held requests look again when the reader stops following
                self.reader.on_state = lambda state: None if state == "following" else watcher.wake_all()
        if self.settings.maintenance_interval_s > 0:
            self.schedule = maintenance.Schedule(dsn, retention_of(self.settings),
                                                 self.settings.maintenance_interval_s, self.record_maintenance)
            self.schedule.start()
        return self.watcher

    def closing(self) -> None:
        """On the event loop, as SIGTERM arrives: readiness turns 503 and held requests end now."""
        self.health.closing = True
        if self.watcher is not None:
            self.watcher.release_all()

    def stop(self) -> None:
        self.health.closing = True
        self.stop_event.set()
        if self.watcher is not None:
            self.watcher.stop()
        if self.schedule is not None:
            self.schedule.stop()

    def record_maintenance(self, report: maintenance.Report | None, error: BaseException | None) -> None:
        m = self.metrics
        if report is None:
            m.maintenance_runs.labels("failed" if error is not None else "skipped").inc()
            return
        m.maintenance_runs.labels("done").inc()
        for what, count in (("results", report.results_pruned), ("conflicts", report.conflicts_pruned),
                            ("tokens", report.tokens_pruned), ("log_folded", report.log_folded),
                            ("log_trimmed", report.log_trimmed)):
            m.maintenance_removed.labels(what).inc(count)
        m.maintenance_last_success.set(time.time())
        m.maintenance_seconds.set(report.seconds)
        for table, size in report.table_bytes.items():
            m.sync_table_bytes.labels(table).set(size)


def throttle_policy(settings: Settings) -> ThrottlePolicy:
    return ThrottlePolicy(
        pair_free=settings.login_free_failures, address_free=settings.login_address_free_failures,
        first_delay_s=settings.login_first_delay_s, max_delay_s=settings.login_max_delay_s,
        forget_s=settings.login_forget_s,
    )


def retention_of(settings: Settings) -> maintenance.Retention:
    return maintenance.Retention(
        result_days=settings.result_retention_days, conflict_days=settings.conflict_retention_days,
        shape_log_days=settings.shape_log_retention_days, tail_changes=settings.shape_log_tail_changes,
    )


def _end_held_requests_on_sigterm(loop: asyncio.AbstractEventLoop, closing: Callable[[], None]) -> Callable[[], None]:
    """Chain a SIGTERM (and SIGINT) handler in front of the server's own: uvicorn's only stops accepting
    and waits for the requests in flight, and a held long poll or SSE stream would hold the restart for
    its whole hold time. Ours first ends every held request (each answers or ends at once; the clients
    reconnect and lose nothing), then calls uvicorn's. Returns what puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(closing)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)

    return restore


def _install_error_handlers(app: FastAPI) -> None:
    install_error_handlers(app)

    @app.exception_handler(DatabaseUnavailable)
    async def unavailable(_: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return unavailable_answer(exc)


def unavailable_answer(exc: DatabaseUnavailable) -> JSONResponse:
    retry = str(max(1, round(exc.retry_after_s)))
    return json_error(ApiError(503, "unavailable", "database unavailable; retry later",
                               headers={"Retry-After": retry}))
