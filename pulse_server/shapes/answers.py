"""The Shape API's HTTP answers, shared by the cloud route and the device app's: reading the query,
the 400/401/409 bodies, and a 200 with every `electric-*` header, cache header and ETag."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from pulse_server.shapes import compression, protocol
from pulse_server.shapes.errors import ShapeRequestError
from pulse_server.shapes.subset import SUBSET_KEYS, subset_from_query


def read_request(query: Mapping[str, str], body: Mapping[str, Any] | None = None) -> protocol.ShapeRequest:
    """The query string as a ShapeRequest (`params[n]=` gathered, a subset from `subset__*` or from a
    POST's JSON `body`); raises ShapeRequestError."""
    params = {k[len("params["):-1]: v for k, v in query.items() if k.startswith("params[") and k.endswith("]")}
    subset = subset_from_query(query) if body is None else {k: v for k, v in body.items() if k in SUBSET_KEYS}
    return protocol.parse_request(query, params, subset)


async def read_post_body(request: Request) -> dict[str, Any]:
    """A subset POST's JSON object; raises ShapeRequestError naming the body when it is not one."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ShapeRequestError({"body": ["must be a JSON object: {where, params, limit, offset, order_by}"]})
    return body


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case, RFC 7235);
    None for any other scheme (`Basic <token>` is not a bearer token)."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


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
    body = b"[" + b",".join(m if isinstance(m, bytes) else protocol.encode_bytes(m) for m in messages) + b"]"
    gzipped = compression.accepts_gzip(request) and len(body) >= compression.MIN_BYTES
    etag = _etag(handle, req, offset, None if req.offset == "-1" else body, gzipped)
    headers = _headers(req, handle, offset, etag, up_to_date)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if gzipped:
        return compression.gzipped(body, headers)
    return Response(body, media_type="application/json", headers=headers)


def snapshot_etag(request: Request, req: protocol.ShapeRequest, handle: str, position: tuple[int, int]) -> str:
    """A snapshot's ETag, known before its body is read (see `_etag`)."""
    return _etag(handle, req, protocol.offset_text(position), None, compression.accepts_gzip(request))


def not_modified(req: protocol.ShapeRequest, handle: str, position: tuple[int, int], etag: str) -> Response:
    return Response(status_code=304, headers=_headers(req, handle, protocol.offset_text(position), etag, False))


def whole_snapshot(request: Request, req: protocol.ShapeRequest, handle: str, position: tuple[int, int],
                   etag: str, body: bytes) -> Response:
    headers = _headers(req, handle, protocol.offset_text(position), etag, False)
    if compression.accepts_gzip(request):  # (the ETag already names the encoding)
        return compression.gzipped(body, headers)
    return Response(body, media_type="application/json", headers=headers)


def stream_snapshot(
    request: Request, req: protocol.ShapeRequest, handle: str, position: tuple[int, int], etag: str,
    body: AsyncIterator[bytes],
) -> Response:
    """A snapshot sent as it is read: the headers at once, then the body in parts (each compressed and
    flushed as it comes when the client accepts gzip)."""
    headers = _headers(req, handle, protocol.offset_text(position), etag, False)
    if compression.accepts_gzip(request):
        return StreamingResponse(compression.gzip_stream(body), media_type="application/json",
                                 headers={**headers, "content-encoding": "gzip"})
    return StreamingResponse(body, media_type="application/json", headers=headers)


def subset_snapshot(request: Request, req: protocol.ShapeRequest, handle: str, position: tuple[int, int],
                    metadata: dict[str, Any], data: list[dict[str, Any]]) -> Response:
    """A subset snapshot as Electric's client reads it: `{"metadata": ..., "data": [...]}`, never cached
    (a moment's view), with the schema and `electric-snapshot: true`."""
    body = protocol.encode_bytes({"metadata": metadata, "data": data})
    headers = {
        "electric-handle": handle,
        "electric-offset": protocol.offset_text(position),
        "electric-schema": protocol.schema_header(req.columns),
        "electric-snapshot": "true",
        "cache-control": "no-store",
        "vary": "Authorization, Accept-Encoding",
    }
    if compression.accepts_gzip(request) and len(body) >= compression.MIN_BYTES:
        return compression.gzipped(body, headers)
    return Response(body, media_type="application/json", headers=headers)


def _etag(handle: str, req: protocol.ShapeRequest, offset: str, body: bytes | None, gzipped: bool) -> str:
    # A snapshot's content follows from the handle (definition, scope, generation) and the log
    # position it reflects: not hashed from the body (megabytes), nor from snapshot-end, whose
    # xmin/xmax move with every transaction in the cluster. The gzipped body is another representation:
    # another strong ETag.
    material = f"{handle}:{req.offset}:{offset}".encode() + (b"" if body is None else b":" + body)
    return '"' + hashlib.sha256(material).hexdigest()[:32] + ('-gzip"' if gzipped else '"')


def _headers(req: protocol.ShapeRequest, handle: str, offset: str, etag: str, up_to_date: bool) -> dict[str, str]:
    headers = {
        "electric-handle": handle,
        "electric-offset": offset,
        "etag": etag,
        "vary": "Authorization, Accept-Encoding",
    }
    if req.live:
        headers["electric-cursor"] = protocol.live_cursor()
        headers["cache-control"] = "private, max-age=5, stale-while-revalidate=5"
    else:
        headers["electric-schema"] = protocol.schema_header(req.columns)
        headers["cache-control"] = (
            "private, max-age=604800, stale-while-revalidate=2629746" if req.offset == "-1" and not req.changes_only
            else "private, max-age=60, stale-while-revalidate=300"
        )
    if up_to_date:
        headers["electric-up-to-date"] = ""
    return headers
