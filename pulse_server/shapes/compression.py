"""gzip for shape responses, whole or streamed, when the client accepts it (`Accept-Encoding`).

A streamed snapshot is compressed part by part as it is read, each part flushed (Z_SYNC_FLUSH) so a
client parses rows as they arrive, exactly as it would without compression; Starlette's GZipMiddleware
would buffer a stream. A large part is compressed in a worker thread (zlib releases the GIL), overlapping
the next part's read. Level 1: on a coach's year (36,500 rows, every column) it keeps 8 % of the bytes
(63 bytes a row) at a fifth of level 6's CPU, and level 6 saves only 15 bytes a row more
(bench/shape_catchup.py). Server-sent events are not compressed: each event would need its own flush,
and they are small.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator

import anyio
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

LEVEL = 1
MIN_BYTES = 1024  # smaller bodies (an up-to-date, a few changes) go as they are
GZIP_WBITS = 31  # zlib's deflate in a gzip wrapper
INLINE_BYTES = 256 * 1024  # about 2 ms of level-1 compression


def accepts_gzip(request: Request) -> bool:
    """Whether `Accept-Encoding` allows gzip (or `*`) with a non-zero quality."""
    for item in request.headers.get("accept-encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            with contextlib.suppress(ValueError):
                return float(quality[2:]) > 0
            return False
        return True
    return False


def gzip_bytes(body: bytes) -> bytes:
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, GZIP_WBITS)
    return compressor.compress(body) + compressor.flush()


def gzipped(body: bytes, headers: dict[str, str]) -> Response:
    """A JSON answer gzipped: at once when small; a large one (a catch-up of thousands of changes) in a
    worker thread, streamed, so the event loop that serves every held request never waits on it."""
    headers = {**headers, "content-encoding": "gzip"}
    if len(body) < INLINE_BYTES:
        return Response(gzip_bytes(body), media_type="application/json", headers=headers)
    return StreamingResponse(gzip_stream(_once(body)), media_type="application/json", headers=headers)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def gzip_stream(parts: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`parts` as one gzip stream, each part compressed and flushed as it comes. Closing this stream (the
    client went away) closes `parts`, so its own clean-up runs at once."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, GZIP_WBITS)

    def compress(part: bytes) -> bytes:
        return compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH)

    try:
        async for part in parts:
            # A small part is compressed at once (microseconds); a large one in a worker thread, which
            # a crowd of small streams would otherwise all wait for.
            out = compress(part) if len(part) < INLINE_BYTES else await run_in_threadpool(compress, part)
            if out:
                yield out
        yield compressor.flush()
    finally:
        with anyio.CancelScope(shield=True):
            await parts.aclose()  # type: ignore[attr-defined]
