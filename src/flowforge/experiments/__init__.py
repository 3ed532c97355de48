"""The seeds' experiments, one module per experiment, run by ``flowforge experiment NAME``.

Each module defines ``NAME`` (the command name), ``SEED`` (the seed text it re-runs),
``CLAIM`` (the seed's statement, in one or two sentences) and
``run(*, quick: bool, out: Path, seed: int) -> dict`` which writes ``results.json``,
PNG figures and ``report.md`` into ``out`` (see :mod:`flowforge.experiments.common`) and
returns the results. ``--quick`` must finish in under a minute on 2 CPU cores.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXPERIMENTS", "get"]

# name -> module under flowforge.experiments; add a line when an experiment lands.
EXPERIMENTS: dict[str, str] = {
    "energies": "energies",
    "eight-schools": "eight_schools",
    "linear-coupling": "linear_coupling",
    "planar-1d": "planar_1d",
    "topology": "topology",
    "padding": "padding",
    "conditioning": "conditioning",
    "sphere-depth": "sphere_depth",
}


def get(name: str) -> ModuleType:
    """The module of the named experiment; ``ValueError`` listing the known names otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")
