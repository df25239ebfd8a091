"""The one check of a JSON body's declared type, shared by the cloud app and the device app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pulse_server.errors import ApiError


def require_json(content_type: str | None) -> None:
    """A JSON body (a push, a PUT, a dismissal) must be declared JSON: a form or text body (which a browser
    may send to another origin without asking first) is refused with 415 before it is read as JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        shown = repr(content_type) if content_type else "none given"
        raise ApiError(415, "unsupported_media_type",
                       f"content-type: {shown} is not accepted (allowed application/json)",
                       field="content-type", value=content_type, allowed="application/json")


def json_declared(request: Request) -> None:
    """A route's JSON body must be declared JSON; a parameter after the caller's, so a bad token is 401 first."""
    require_json(request.headers.get("content-type"))


JsonDeclared = Annotated[None, Depends(json_declared)]
