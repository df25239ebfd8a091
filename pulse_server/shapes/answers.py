"""The Shape API's HTTP answers, shared by the cloud route and the device app's: reading the query,
the 400/401/409 bodies, and a 200 with every `electric-*` header, cache header and ETag."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from pulse_server.shapes import protocol


def read_request(query: Mapping[str, str]) -> protocol.ShapeRequest:
    """The query string as a ShapeRequest (`params[n]=` gathered); raises ShapeRequestError."""
    params = {k[len("params["):-1]: v for k, v in query.items() if k.startswith("params[") and k.endswith("]")}
    return protocol.parse_request(query, params)


def _plain(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json",
                    headers={"cache-control": "no-store", **(headers or {})})


def bad_request(errors: dict[str, list[str]]) -> Response:
    return _plain(400, {"message": "Invalid request", "errors": errors})


def unauthorized(message: str) -> Response:
    return _plain(401, {"message": message}, {"www-authenticate": "Bearer"})


def not_ready(reason: str, retry_after_s: int = 1) -> Response:
    """503 while no reader follows the replication slot: the client asks again, never told it is up
    to date when the server cannot know (Electric answers 503 the same way while its stack starts)."""
    return _plain(503, {"message": f"the shape log is not following the database: {reason}"},
                  {"retry-after": str(retry_after_s)})


def must_refetch(new_handle: str) -> Response:
    return _plain(409, [{"headers": {"control": "must-refetch"}}], {"electric-handle": new_handle})


def respond(
    request: Request,
    req: protocol.ShapeRequest,
    handle: str,
    messages: list[dict[str, Any]] | list[bytes],
    position: tuple[int, int],
    up_to_date: bool,
) -> Response:
    """`messages` are dicts, or encoded JSON (a snapshot's)."""
    offset = protocol.offset_text(position)
    body = b"[" + b",".join(m if isinstance(m, bytes) else protocol.encode(m).encode() for m in messages) + b"]"
    etag = _etag(handle, req, offset, None if req.offset == "-1" else body)
    headers = _headers(req, handle, offset, etag, up_to_date)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def snapshot_etag(req: protocol.ShapeRequest, handle: str, position: tuple[int, int]) -> str:
    """A snapshot's ETag, known before its body is read (see `_etag`)."""
    return _etag(handle, req, protocol.offset_text(position), None)


def not_modified(req: protocol.ShapeRequest, handle: str, position: tuple[int, int], etag: str) -> Response:
    return Response(status_code=304, headers=_headers(req, handle, protocol.offset_text(position), etag, False))


def whole_snapshot(req: protocol.ShapeRequest, handle: str, position: tuple[int, int], etag: str,
                   body: bytes) -> Response:
    headers = _headers(req, handle, protocol.offset_text(position), etag, False)
    return Response(body, media_type="application/json", headers=headers)


def stream_snapshot(
    req: protocol.ShapeRequest, handle: str, position: tuple[int, int], etag: str, body: AsyncIterator[bytes]
) -> Response:
    """A snapshot sent as it is read: the headers at once, then the body in parts."""
    headers = _headers(req, handle, protocol.offset_text(position), etag, False)
    return StreamingResponse(body, media_type="application/json", headers=headers)


def _etag(handle: str, req: protocol.ShapeRequest, offset: str, body: bytes | None) -> str:
    # A snapshot's content follows from the handle (definition, scope, generation) and the log
    # position it reflects: not hashed from the body (megabytes), nor from snapshot-end, whose
    # xmin/xmax move with every transaction in the cluster.
    material = f"{handle}:{req.offset}:{offset}".encode() + (b"" if body is None else b":" + body)
    return '"' + hashlib.sha256(material).hexdigest()[:32] + '"'


def _headers(req: protocol.ShapeRequest, handle: str, offset: str, etag: str, up_to_date: bool) -> dict[str, str]:
    headers = {
        "electric-handle": handle,
        "electric-offset": offset,
        "etag": etag,
        "vary": "Authorization",
    }
    if req.live:
        headers["electric-cursor"] = protocol.live_cursor()
        headers["cache-control"] = "private, max-age=5, stale-while-revalidate=5"
    else:
        headers["electric-schema"] = protocol.schema_header()
        headers["cache-control"] = (
            "private, max-age=604800, stale-while-revalidate=2629746" if req.offset == "-1"
            else "private, max-age=60, stale-while-revalidate=300"
        )
    if up_to_date:
        headers["electric-up-to-date"] = ""
    return headers
