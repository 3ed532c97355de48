"""Cases for the fitted standardizer (its values are buffers, so `prepare` fits them)."""

import torch

from flowforge import transforms as T

from . import Case


def _fit(t):
    g = torch.Generator().manual_seed(3)
    shape = (64, *t.event_shape)
    spread = 3.0 * torch.rand(shape, generator=g, dtype=torch.float64)
    t.fit_to(2.0 + spread * torch.randn(shape, generator=g, dtype=torch.float64))


CASES = {
    "Standardize": [
        Case("vector", lambda: T.Standardize(3), (3,), prepare=_fit),
        Case("image", lambda: T.Standardize((2, 3, 2)), (2, 3, 2), prepare=_fit),
    ],
}
