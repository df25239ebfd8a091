"""The PWA's static files, served at /app/ by the cloud server and by `pulse agent --serve` alike."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount_pwa(app: FastAPI) -> None:
    """Serve the app shell at /app/ (what the server ships is what runs: no build step)."""

    @app.get("/app", include_in_schema=False)
    def app_root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=308)

    app.mount("/app", StaticFiles(directory=STATIC, html=True), name="pwa")
