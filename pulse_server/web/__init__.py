"""The PWA's static files, served at /app/ by the cloud server and by `pulse agent --serve` alike.

What the server ships is what runs: plain ES modules, no build step. Two things are added on the way
out: `Cache-Control: no-cache` on every file (the service worker's cache is the offline copy; the
browser's HTTP cache must not hand out a stale module beside fresh ones), and the content hash of every
file as it is on disk now, written into sw.js each time sw.js is served, so that any changed file (even
without a restart) installs a new service worker and cache (docs/pwa.md, "Updates").
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
SERVICE_WORKER = "sw.js"
NO_CACHE = {"Cache-Control": "no-cache"}

mimetypes.add_type("application/manifest+json", ".webmanifest")
mimetypes.add_type("text/javascript", ".js")


def shell_version(root: Path = STATIC) -> str:
    """A digest of every file of the app (names and bytes): changes whenever any of them does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class AppFiles(StaticFiles):
    """StaticFiles that asks browsers to revalidate every time (the ETag keeps that cheap)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(NO_CACHE)
        return response


def service_worker_text(root: Path = STATIC) -> str:
    """sw.js with the content hash of the files as they are now (hashing them all takes about 1 ms)."""
    return (root / SERVICE_WORKER).read_text(encoding="utf-8").replace("__SHELL_VERSION__", shell_version(root))


def mount_pwa(app: FastAPI, root: Path | None = None) -> None:
    """Serve the app shell at /app/ and its service worker at /app/sw.js (scope /app/), from `root`
    (default: the files shipped in this package)."""
    root = root or STATIC

    @app.get("/app", include_in_schema=False)
    def app_root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=308)

    @app.get(f"/app/{SERVICE_WORKER}", include_in_schema=False)
    def service_worker() -> Response:
        return Response(service_worker_text(root), media_type="text/javascript",
                        headers={**NO_CACHE, "Service-Worker-Allowed": "/app/"})

    app.mount("/app", AppFiles(directory=root, html=True), name="pwa")
