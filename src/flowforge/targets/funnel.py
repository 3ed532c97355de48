"""Two warped Gaussians with exact samplers: Neal's funnel and a banana.

Both are normalised (``log Z = 0``) and both are sampled exactly for their reference draws
(10,000 i.i.d. draws from a fixed seed), which makes every reference diagnostic available.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Target

__all__ = ["Banana", "Funnel"]

_LOG_2PI = math.log(2 * math.pi)
_DRAWS = 10_000


class Funnel(Target):
    """Neal's funnel: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)`` for ``i = 1..dim-1``.

    .. math::

        \\log p(v, x) = \\log N(v | 0, 9) + \\sum_{i=1}^{d-1} \\log N(x_i | 0, e^{v})

    Coordinates ``[v, x_1, ..., x_{d-1}]``. Normalised: ``log_z = 0``. The neck (``v`` very
    negative) is where mass-seeking fits fail, like the eight schools' centred ``tau``.

    Args:
        dim: total dimension (default 10, Neal's choice).
        scale: the standard deviation of ``v`` (default 3).

    Cost: O(n d).

    References:
        Neal. "Slice sampling". Annals of Statistics 2003, section 8.

    Examples:
        >>> import torch
        >>> t = Funnel()
        >>> t.dim, t.log_z, round(t.log_density(torch.zeros(10)).item(), 3)  # -5 log(2 pi) - log 3
        (10, 0.0, -10.288)
    """

    def __init__(self, dim: int = 10, *, scale: float = 3.0) -> None:
        if int(dim) < 2:
            raise ValueError(f"the funnel needs dim >= 2; got {dim}")
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale}")
        self.dim, self.scale = int(dim), float(scale)
        self.name = "funnel"
        self.log_z = 0.0

    @property
    def names(self) -> list[str]:
        return ["v"] + [f"x{i}" for i in range(1, self.dim)]

    def _log_density(self, z: Tensor) -> Tensor:
        v, x = z[:, 0], z[:, 1:]
        log_pv = -0.5 * (v / self.scale) ** 2 - math.log(self.scale) - 0.5 * _LOG_2PI
        log_px = -0.5 * x**2 * torch.exp(-v)[:, None] - 0.5 * v[:, None] - 0.5 * _LOG_2PI
        return log_pv + log_px.sum(-1)

    def reference_draws(self) -> Tensor:
        """10,000 exact draws (seed 0)."""
        g = torch.Generator().manual_seed(0)
        v = self.scale * torch.randn(_DRAWS, 1, generator=g, dtype=torch.float64)
        x = torch.exp(0.5 * v) * torch.randn(_DRAWS, self.dim - 1, generator=g, dtype=torch.float64)
        return torch.cat([v, x], -1)


class Banana(Target):
    """A banana: ``x_1 ~ N(0, s^2)``, ``x_2 | x_1 ~ N(b (x_1^2 - s^2), 1)``, further coordinates ``N(0, 1)``.

    .. math::

        \\log p(x) = \\log N(x_1 | 0, s^2) + \\log N(x_2 | b(x_1^2 - s^2), 1)
        + \\sum_{i>2} \\log N(x_i | 0, 1)

    Normalised (``log_z = 0``; the shear ``x_2 - b x_1^2`` has unit Jacobian). The mean is 0.

    Args:
        dim: total dimension, at least 2.
        scale: ``s``, the standard deviation of ``x_1``.
        curvature: ``b``.

    Cost: O(n d).

    References:
        Haario, Saksman, Tamminen. "Adaptive proposal distribution for random walk Metropolis
        algorithm". Computational Statistics 1999 (the twisted Gaussian).

    Examples:
        >>> import torch
        >>> Banana().reference_draws().mean(0).abs().max() < 0.1
        tensor(True)
    """

    def __init__(self, dim: int = 2, *, scale: float = 2.0, curvature: float = 0.5) -> None:
        if int(dim) < 2:
            raise ValueError(f"the banana needs dim >= 2; got {dim}")
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale}")
        self.dim, self.scale, self.curvature = int(dim), float(scale), float(curvature)
        self.name = "banana"
        self.log_z = 0.0

    def _log_density(self, z: Tensor) -> Tensor:
        x1 = z[:, 0]
        u = z[:, 1] - self.curvature * (x1**2 - self.scale**2)
        out = -0.5 * (x1 / self.scale) ** 2 - math.log(self.scale) - 0.5 * u**2
        out = out - 0.5 * (z[:, 2:] ** 2).sum(-1) - 0.5 * self.dim * _LOG_2PI
        return out

    def reference_draws(self) -> Tensor:
        """10,000 exact draws (seed 0)."""
        g = torch.Generator().manual_seed(0)
        e = torch.randn(_DRAWS, self.dim, generator=g, dtype=torch.float64)
        x1 = self.scale * e[:, 0]
        x2 = e[:, 1] + self.curvature * (x1**2 - self.scale**2)
        return torch.cat([x1[:, None], x2[:, None], e[:, 2:]], -1)
