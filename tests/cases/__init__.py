"""Generic-check cases, one module per transform family.

Each module defines ``CASES``: a dict from an exported class name of
``flowforge.transforms`` to a list of :class:`Case`. ``tests/test_transforms_generic.py``
collects every module here and fails if an exported class has no case.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import torch


def normal(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64)


def unit(shape: tuple[int, ...]) -> torch.Tensor:
    """Points strictly inside (0, 1), away from the ends."""
    return 0.02 + 0.96 * torch.rand(shape, dtype=torch.float64)


def positive(shape: tuple[int, ...]) -> torch.Tensor:
    return 0.1 + torch.rand(shape, dtype=torch.float64) * 3


@dataclass
class Case:
    """One configuration of a transform for the generic checks.

    Attributes:
        id: short label for the test id.
        make: builds the transform (in float32; the test casts to float64).
        event_shape: the shape of one input event.
        context: context size for conditional layers, else None.
        inputs: draws inputs of a given full shape inside the transform's domain.
        perturb: std of the noise added to every parameter so that checks do not run at
            the identity initialisation; 0 to keep the parameters.
        tol: round-trip tolerance override (for iterative inverses).
        prepare: called on the float64 transform before checking (e.g. ActNorm init).
    """

    id: str
    make: Callable[[], object]
    event_shape: tuple[int, ...]
    context: int | None = None
    inputs: Callable[[tuple[int, ...]], torch.Tensor] = normal
    perturb: float = 0.3
    tol: float | None = None
    prepare: Callable[[object], None] | None = None


def all_cases() -> dict[str, list[Case]]:
    merged: dict[str, list[Case]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, cases in getattr(module, "CASES", {}).items():
            merged.setdefault(name, []).extend(cases)
    return merged
