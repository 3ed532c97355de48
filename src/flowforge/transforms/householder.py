"""Householder flows: orthogonal maps as products of reflections (seed 004, "Linear flows")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Transform

__all__ = ["Householder"]


class Householder(Transform):
    """An orthogonal map, the product of ``k`` Householder reflections ``H = I - 2 v v^T / |v|^2``.

    ``y = H_k ... H_1 x``; log-det zero; the inverse applies the reflections in reverse
    order. Cost O(k d) per sample in both directions. ``k = d`` reflections can express
    any orthogonal matrix (up to a sign of the determinant when ``k = d - 1``).

    References:
        Tomczak & Welling. "Improving Variational Auto-Encoders using Householder Flow". 2016.

    Examples:
        >>> import torch
        >>> t = Householder(5, reflections=3); x = torch.randn(2, 5)
        >>> bool(torch.allclose(t(x)[0].norm(dim=-1), x.norm(dim=-1), atol=1e-5))
        True
    """

    def __init__(self, features: int, *, reflections: int = 2) -> None:
        super().__init__()
        if reflections < 1:
            raise ValueError(f"reflections must be >= 1; got {reflections}")
        self.event_shape = (int(features),)
        self.vectors = nn.Parameter(torch.randn(int(reflections), int(features)))

    def _reflect(self, x: Tensor, order) -> Tensor:
        v = self.vectors.to(x.dtype)
        for i in order:
            u = v[i] / v[i].norm()
            x = x - 2 * (x @ u).unsqueeze(-1) * u
        return x

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._reflect(x, range(len(self.vectors))), x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._reflect(y, reversed(range(len(self.vectors)))), y.new_zeros(y.shape[:-1])
