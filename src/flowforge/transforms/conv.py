"""Glow's invertible 1x1 convolution: a learned channel mixing for images."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ShapeError
from .base import Transform
from .linear import LUWeight

__all__ = ["Invertible1x1Conv"]


class Invertible1x1Conv(Transform):
    """Mixes the channels of ``(..., C, H, W)`` images with one invertible ``C x C`` matrix.

    ``y[:, h, w] = W x[:, h, w]`` at every pixel, with ``W = P L (U + diag(d))`` in the LU
    form (``lu=True``, log-det O(C)) or a full matrix (``lu=False``, ``slogdet`` O(C^3)).
    Log-det ``H * W * log|det W|``. The inverse solves with ``W`` (O(C^2) per pixel).
    Seed 004: the learned generalisation of a fixed channel permutation between couplings.

    Cost: O(C^2) per pixel in both directions; log-det O(C) (LU) or O(C^3) (full matrix),
    once per batch.

    References:
        Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.

    Examples:
        >>> import torch
        >>> t = Invertible1x1Conv(4); x = torch.randn(2, 4, 3, 3)
        >>> bool(torch.allclose(t.inverse(t(x)[0])[0], x, atol=1e-5))
        True
    """

    event_dim = 3

    def __init__(self, channels: int, *, lu: bool = True) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive; got {channels}")
        self.channels = int(channels)
        self.lu = bool(lu)
        if self.lu:
            self.weight = LUWeight(self.channels)
        else:
            q, _ = torch.linalg.qr(torch.randn(self.channels, self.channels))
            self.weight_matrix = torch.nn.Parameter(q)

    def _check(self, x: Tensor, direction: str) -> None:
        if x.dim() < 3 or x.shape[-3] != self.channels:
            raise ShapeError(
                f"Invertible1x1Conv.{direction} expects images of shape (..., {self.channels}, H, W); "
                f"got {tuple(x.shape)}"
            )

    def _matrix(self) -> Tensor:
        return self.weight.matrix() if self.lu else self.weight_matrix

    def _logabsdet(self) -> Tensor:
        return self.weight.logabsdet() if self.lu else torch.linalg.slogdet(self.weight_matrix)[1]

    def _ladj(self, x: Tensor) -> Tensor:
        return (x.shape[-1] * x.shape[-2] * self._logabsdet()).to(x.dtype).expand(x.shape[:-3])

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(x, "forward")
        y = torch.einsum("ij,...jhw->...ihw", self._matrix().to(x.dtype), x)
        return y, self._ladj(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(y, "inverse")
        flat = y.movedim(-3, 0).reshape(self.channels, -1)
        w = None if self.lu else self.weight_matrix.to(y.dtype)
        x = self.weight.solve(flat) if w is None else torch.linalg.solve(w, flat)
        x = x.reshape(self.channels, *y.shape[:-3], *y.shape[-2:]).movedim(0, -3)
        return x, -self._ladj(y)
