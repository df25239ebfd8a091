"""Where tests keep the images a person should look at: report pages, app screens.

`tests/artefacts/<area>/` in the working tree (ignored by git), or under `$PULSE_TEST_ARTEFACTS` when set
(CI may collect that folder). Each run overwrites the files of the tests it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "artefacts"


def artefact_dir(area: str) -> Path:
    base = Path(os.environ["PULSE_TEST_ARTEFACTS"]) if os.environ.get("PULSE_TEST_ARTEFACTS") else ROOT
    folder = base / area
    folder.mkdir(parents=True, exist_ok=True)
    return folder
