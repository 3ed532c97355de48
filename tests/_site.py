"""Build the documentation site as `make docs` does (shared by the docs tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mkdocs_build(out: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the repository into ``out``; the caller asserts on the result.

    Not quiet: with ``-q`` mkdocs 1.6 drops warnings before ``--strict`` counts them, so a
    docstring that renders wrongly would pass.
    """
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
