"""The server process's bootstrap: settings from the environment, then the app."""

from __future__ import annotations

from fastapi import FastAPI

from pulse_server import logs
from pulse_server.api.app import create_app
from pulse_server.settings import Settings


def app_from_environment() -> FastAPI:
    settings = Settings()
    logs.configure(settings.log_level)
    return create_app(settings)
