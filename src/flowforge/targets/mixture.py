"""A mixture of well-separated isotropic Gaussians: the simplest target with dropped modes.

Reverse-KL fits are mode-seeking; on this target a fit that covers ``m`` of the ``K`` equally
weighted modes reaches an ELBO of about ``log Z - log(K / m)``, and PSIS alone often does not
notice. :mod:`flowforge.diagnostics.defensive` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Target

__all__ = ["GaussianMixture"]

_DRAWS = 10_000


class GaussianMixture(Target):
    """``p(x) = sum_k w_k N(x | m_k, s^2 I)`` with means on a circle in the first two coordinates.

    .. math::

        \\log p(x) = \\log \\sum_{k=1}^{K} w_k\\, N(x | m_k, s^2 I),\\qquad
        m_k = r\\,(\\cos(2\\pi k / K), \\sin(2\\pi k / K), 0, \\dots, 0)

    Normalised (``log_z = 0``); exact reference draws.

    Args:
        dim: dimension, at least 2.
        components: ``K``.
        radius: ``r``; neighbouring means are ``2 r sin(pi / K)`` apart.
        scale: ``s``, each component's standard deviation.
        weights: mixture weights (normalised here); equal by default.

    Cost: O(n K d).

    Examples:
        >>> import torch
        >>> t = GaussianMixture(components=2)
        >>> torch.exp(t.log_density(t.means)).tolist()  # each mode holds half the mass
        [0.3183..., 0.3183...]
    """

    def __init__(
        self,
        dim: int = 2,
        *,
        components: int = 4,
        radius: float = 4.0,
        scale: float = 0.5,
        weights: Sequence[float] | None = None,
    ) -> None:
        if int(dim) < 2 or int(components) < 1:
            raise ValueError(f"need dim >= 2 and components >= 1; got dim={dim}, components={components}")
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale}")
        self.dim, self.components = int(dim), int(components)
        self.radius, self.scale = float(radius), float(scale)
        if weights is None:
            w = torch.full((self.components,), 1.0 / self.components, dtype=torch.float64)
        else:
            w = torch.as_tensor(weights, dtype=torch.float64)
            if w.shape != (self.components,) or not bool((w > 0).all()):
                raise ValueError(f"weights must be {self.components} positive numbers; got {weights!r}")
            w = w / w.sum()
        self.weights = w
        angle = 2 * math.pi * torch.arange(self.components, dtype=torch.float64) / self.components
        means = torch.zeros(self.components, self.dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = self.radius * torch.cos(angle), self.radius * torch.sin(angle)
        self.means = means
        self.name = "mixture"
        self.log_z = 0.0

    def _log_density(self, z: Tensor) -> Tensor:
        means = self.means.to(z)
        sq = ((z[:, None, :] - means) ** 2).sum(-1) / self.scale**2
        log_norm = -self.dim * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))
        return torch.logsumexp(torch.log(self.weights.to(z)) - 0.5 * sq, -1) + log_norm

    def reference_draws(self) -> Tensor:
        """10,000 exact draws (seed 0)."""
        g = torch.Generator().manual_seed(0)
        k = torch.multinomial(self.weights, _DRAWS, replacement=True, generator=g)
        return self.means[k] + self.scale * torch.randn(_DRAWS, self.dim, generator=g, dtype=torch.float64)
