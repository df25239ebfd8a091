"""Every error as the one JSON body of pulse_server.errors: the handlers both apps install.

The cloud app adds its database's answer (503 while Postgres is unavailable); the device app uses
these as they are.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pulse_core.errors import PulseError
from pulse_server.errors import ApiError, from_domain

log = logging.getLogger("pulse.http")


def json_error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return json_error(exc)

    @app.exception_handler(PulseError)
    async def domain_error(_: Request, exc: PulseError) -> JSONResponse:
        return json_error(from_domain(exc))

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        message = f"{where}: {first.get('msg', 'malformed request')}"
        value = first.get("input")
        return json_error(ApiError(400, "bad_request", message, field=where,
                                   value=value if isinstance(value, (str, int, float, bool)) else None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "bad_request", 401: "unauthorized", 403: "forbidden"}.get(
            exc.status_code, "bad_request")
        return json_error(ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return json_error(ApiError(500, "internal", "internal error"))
