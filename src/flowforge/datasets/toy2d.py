"""Built-in 2-D data sets for density estimation (the usual flow benchmarks).

Every generator takes ``n`` and a ``torch.Generator`` and returns an ``(n, 2)`` float tensor.
Two have a known density, so their entropy (the best achievable NLL) is exact:
``checkerboard`` (uniform on 8 of 16 unit squares of [-4, 4]^2: entropy log 32) and
``8gaussians`` (8 well-separated Gaussians, sd 0.2, on a circle of radius 2*sqrt(2): entropy
computed numerically by :func:`entropy`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GENERATORS", "entropy", "generate"]


def _moons(n: int, g: torch.Generator) -> Tensor:
    n1 = n // 2
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.stack([torch.cos(t[:n1]), torch.sin(t[:n1])], -1)
    lower = torch.stack([1 - torch.cos(t[n1:]), 0.5 - torch.sin(t[n1:])], -1)
    x = torch.cat([upper, lower]) + 0.08 * torch.randn(n, 2, generator=g)
    return (x - torch.tensor([0.5, 0.25])) * 2


def _circles(n: int, g: torch.Generator) -> Tensor:
    r = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, 2.5)
    t = torch.rand(n, generator=g) * 2 * math.pi
    x = torch.stack([r * torch.cos(t), r * torch.sin(t)], -1)
    return x + 0.08 * torch.randn(n, 2, generator=g)


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k.float() * (2 * math.pi / 8)
    centre = 2 * math.sqrt(2) * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centre + 0.2 * torch.randn(n, 2, generator=g)


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    # Uniform on the 8 squares of [-4, 4]^2 with even (floor(x)/2 + floor(y)/2) parity pattern.
    x1 = torch.rand(n, generator=g) * 8 - 4
    col = torch.floor(x1 / 2)
    row = torch.randint(0, 2, (n,), generator=g).float() * 2 + (col.remainder(2))
    x2 = torch.rand(n, generator=g) * 2 + row * 2 - 4
    return torch.stack([x1, x2], -1)


def _two_spirals(n: int, g: torch.Generator) -> Tensor:
    t = torch.sqrt(torch.rand(n, generator=g)) * 540 * (2 * math.pi) / 360
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    x = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], -1) * sign.unsqueeze(-1)
    return x / 3 + 0.1 * torch.randn(n, 2, generator=g)


def _pinwheel(n: int, g: torch.Generator) -> Tensor:
    classes, rate = 5, 0.25
    k = torch.randint(0, classes, (n,), generator=g)
    feats = torch.randn(n, 2, generator=g) * torch.tensor([0.3, 0.05]) + torch.tensor([1.0, 0.0])
    angle = k.float() * (2 * math.pi / classes) + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angle), torch.sin(angle)
    x = torch.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]], -1)
    return 2 * x


def _rings(n: int, g: torch.Generator) -> Tensor:
    r = (torch.randint(1, 5, (n,), generator=g).float()) * 0.9
    t = torch.rand(n, generator=g) * 2 * math.pi
    x = torch.stack([r * torch.cos(t), r * torch.sin(t)], -1)
    return x + 0.08 * torch.randn(n, 2, generator=g)


GENERATORS = {
    "moons": _moons,
    "circles": _circles,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
    "pinwheel": _pinwheel,
    "rings": _rings,
}


def generate(name: str, n: int, *, seed: int = 0) -> Tensor:
    """Draw ``n`` points of the named 2-D data set (float32, shape ``(n, 2)``).

    Examples:
        >>> generate("moons", 5, seed=0).shape
        torch.Size([5, 2])
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown 2-D data set {name!r}; expected one of {sorted(GENERATORS)}")
    if n < 1:
        raise ValueError(f"n must be positive; got {n}")
    g = torch.Generator().manual_seed(int(seed))
    x = GENERATORS[name](int(n), g)
    # Generators emit components in blocks; shuffle so that any slice is a fair sample.
    return x[torch.randperm(int(n), generator=g)]


def entropy(name: str) -> float | None:
    """The exact differential entropy (nats) of a data set where it is known, else ``None``.

    Examples:
        >>> round(entropy("checkerboard"), 4)
        3.4657
    """
    if name == "checkerboard":
        return math.log(32.0)
    if name == "8gaussians":
        # E[-log p] by quadrature on a fine grid: the 8 components barely overlap.
        lin = torch.linspace(-5, 5, 2001, dtype=torch.float64)
        xx, yy = torch.meshgrid(lin, lin, indexing="ij")
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        cx, cy = 2 * math.sqrt(2) * torch.cos(angles), 2 * math.sqrt(2) * torch.sin(angles)
        d2 = (xx[..., None] - cx) ** 2 + (yy[..., None] - cy) ** 2
        logp = torch.logsumexp(-d2 / (2 * 0.04), -1) - math.log(8) - math.log(2 * math.pi * 0.04)
        h = (lin[1] - lin[0]) ** 2
        return float(-(logp.exp() * logp).sum() * h)
    return None
