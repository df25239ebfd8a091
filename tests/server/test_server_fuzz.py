"""Schemathesis against the running server's own OpenAPI schema: no generated request gets a 500.

Run as the `schemathesis` command (its pytest plugin's lazy schemas do not work with this pytest),
signed in as an athlete so that authenticated routes are exercised past the token check, with our
check that every error comes in the documented body (fuzz_checks.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from server_support import ServerProcess, User, clean_env

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
HERE = Path(__file__).resolve().parent


def test_no_request_generated_from_the_openapi_schema_gets_a_server_error_or_an_undocumented_error_body(
    server: ServerProcess, make_user: Callable[..., User], tmp_path: Path
) -> None:
    user = make_user(prefix="fuzz")
    env = clean_env(SCHEMATHESIS_HOOKS="fuzz_checks",
                    PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
                    NO_COLOR="1", COLUMNS="120")
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{server.url}/openapi.json",
         "--checks", "not_a_server_error,documented_error_body",
         "--header", f"Authorization: Bearer {user.token}",
         "--max-examples", "30", "--request-timeout", "15", "--max-failures", "5"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    tested = re.search(r"Tested:\s+(\d+)", done.stdout)
    assert tested and int(tested[1]) >= 13, done.stdout[-3000:]  # every route, /v1/shape included
