"""The OpenAPI document as the server really answers: our error body, 400 instead of FastAPI's 422."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pulse_server.api.schemas import ErrorOut

ERROR_STATUSES = {
    "400": "Malformed request (bad_request)",
    "401": "Missing, invalid, expired or revoked token (unauthorized)",
    "403": "Not allowed (forbidden: coaches do not write)",
    "404": "Not found, or not yours to read (not_found)",
    "413": "Body or batch too large (payload_too_large, batch_too_large)",
    "422": "A value the rules refuse (out_of_range, not_a_number, ...)",
    "426": "Unsupported protocol",
    "429": "Rate limited (with Retry-After)",
    "503": "Database unavailable (with Retry-After)",
}


def install(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
        components["ErrorBody"] = {
            "type": "object", "required": ["error"],
            "properties": {"error": {"$ref": "#/components/schemas/ErrorOut"}},
        }
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)  # FastAPI's validation body: we answer 400 with ErrorBody
                if path == "/v1/shape":
                    continue  # Electric's own error format (docs/shapes.md)
                for status, description in ERROR_STATUSES.items():
                    responses.setdefault(status, {"description": description, "content": body})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
