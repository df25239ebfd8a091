"""The deployment drills: nginx as deploy/nginx/pulse.conf sets it up, in front of real `pulse-server`
instances on a throwaway database.

They reuse the sync tests' helpers (tests/sync: a server that can be killed and started again on its
port, a device driven through `pulse`, a live shape follower) and the benchmarks' nginx runner
(bench/_nginx.py, which renders the shipped site file with only its addresses replaced)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE.parent / "sync", HERE.parents[1] / "bench"):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
