"""A schemathesis check, loaded by the fuzz test through SCHEMATHESIS_HOOKS: errors come in our body."""

from __future__ import annotations

from typing import Any

import schemathesis

# /v1/shape speaks the Electric protocol, errors included (docs/api.md).
OWN_ERROR_FORMAT = ("/v1/shape",)


@schemathesis.check
def documented_error_body(ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]) -> bool | None:
    """Every 4xx/5xx is {"error": {"code", "message", ...}}: never FastAPI's default body."""
    if response.status_code < 400 or case.path in OWN_ERROR_FORMAT:
        return None
    body = response.json()
    if not (isinstance(body, dict) and set(body) == {"error"} and {"code", "message"} <= set(body["error"])):
        raise AssertionError(f"not the documented error body: {response.text[:200]}")
    return None
