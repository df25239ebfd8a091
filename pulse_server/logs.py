"""JSON logs with the request id and user id. Never tokens, passwords or health values at info."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
user_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("user_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
            "user_id": user_id.get(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            line.update(extra)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("pulse")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class _Listening(logging.Handler):
    """uvicorn's "Uvicorn running on http://HOST:PORT" as the one line people look for, on stdout; its
    warnings and errors (a port in use) as plain lines on stderr; the rest of its chatter dropped."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Uvicorn running on "):
            url = message.removeprefix("Uvicorn running on ").split(" (", 1)[0]
            sys.stdout.write(f"listening on {url}\n")
            sys.stdout.flush()
        elif record.levelno >= logging.WARNING:
            sys.stderr.write(f"{'error' if record.levelno >= logging.ERROR else 'warning'}: {message}\n")


def announce_listening() -> None:
    """For `pulse-server serve`: it binds in this process, with one worker or several (docs/deploy.md)."""
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.handlers[:] = [_Listening()]
    uvicorn_log.setLevel(logging.INFO)
    uvicorn_log.propagate = False
