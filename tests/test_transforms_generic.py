"""SPEC.md's generic checks on every class exported by flowforge.transforms."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge import transforms as T

from .cases import all_cases

CASES = all_cases()
BATCH_SHAPES = [(), (5,), (3, 4)]
ABSTRACT = {"Transform"}  # the base class itself: covered through every subclass


def test_every_exported_transform_has_a_case():
    missing = sorted(set(T.__all__) - set(CASES) - ABSTRACT)
    assert not missing, f"exported transforms without generic-check cases: {missing}"
    stray = sorted(set(CASES) - set(T.__all__))
    assert not stray, f"cases for names not exported by flowforge.transforms: {stray}"


def _params():
    for name, cases in sorted(CASES.items()):
        for case in cases:
            for batch in BATCH_SHAPES:
                yield pytest.param(
                    name, case, batch, id=f"{name}-{case.id}-{'x'.join(map(str, batch)) or 'scalar'}"
                )


@pytest.mark.parametrize(("name", "case", "batch"), list(_params()))
def test_generic_checks(name, case, batch):
    torch.manual_seed(0)
    t = case.make()
    assert type(t).__name__ == name, f"case for {name} builds a {type(t).__name__}"
    t = t.double()
    if case.perturb:
        with torch.no_grad():
            for p in t.parameters():
                p.add_(case.perturb * torch.randn_like(p))
    if case.prepare is not None:
        case.prepare(t)
    x = case.inputs((*batch, *case.event_shape))
    context = torch.randn(*batch, case.context, dtype=torch.float64) if case.context else None
    report = ff.check_transform(t, x, context, **({"roundtrip_tol": case.tol} if case.tol else {}))
    report.raise_if_failed()
