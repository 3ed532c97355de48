"""Activation normalisation: a per-channel affine map initialised from the data (Glow)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ShapeError
from .base import Transform

__all__ = ["ActNorm"]


class ActNorm(Transform):
    """Per-channel scale and shift initialised from the first data batch (Glow).

    ``y = x * exp(s) + b`` per channel; log-det ``(prod of spatial sizes) * sum s``. On
    the first call in the normalizing direction (data -> base, i.e. during maximum
    likelihood) ``b`` and ``s`` are set so that the outputs have zero mean and unit
    variance per channel; a first call in the generative direction keeps the identity.

    Args:
        features: number of channels ``C``.
        event_dim: 1 for vectors ``(..., C)``, 3 for images ``(..., C, H, W)``.

    References:
        Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.

    Cost: O(n) in both directions.

    Examples:
        >>> import torch
        >>> t = ActNorm(2); z, _ = t.inverse(5 + 3 * torch.randn(1000, 2))
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True
    """

    def __init__(self, features: int, *, event_dim: int = 1) -> None:
        super().__init__()
        if event_dim not in (1, 2, 3):
            raise ValueError(f"event_dim must be 1, 2 or 3; got {event_dim}")
        self.features = int(features)
        self.event_dim = event_dim
        self.log_scale = nn.Parameter(torch.zeros(self.features))
        self.shift = nn.Parameter(torch.zeros(self.features))
        self.register_buffer("initialized", torch.tensor(False))
        # A Python mirror of the buffer, refreshed on loading: reading the buffer every call is a
        # host sync, and under torch.compile a graph break at every ActNorm of the model.
        self._ready = False
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_ready())

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.to(x.dtype).view(self.features, *[1] * (self.event_dim - 1))

    def _check(self, x: Tensor, direction: str) -> None:
        c = x.shape[x.dim() - self.event_dim]
        if c != self.features:
            raise ShapeError(
                f"ActNorm.{direction} expects {self.features} channels at dim -{self.event_dim}; "
                f"got shape {tuple(x.shape)}"
            )

    def _ladj(self, x: Tensor) -> Tensor:
        spatial = int(torch.Size(x.shape[x.dim() - self.event_dim + 1 :]).numel())
        return (spatial * self.log_scale.sum()).to(x.dtype).expand(x.shape[: x.dim() - self.event_dim])

    def _refresh_ready(self) -> None:
        self._ready = bool(self.initialized)

    @torch.no_grad()
    def _initialize(self, y: Tensor) -> None:
        flat = y.movedim(y.dim() - self.event_dim, -1).reshape(-1, self.features)
        if flat.shape[0] > 1:
            self.shift.copy_(flat.mean(0))
            self.log_scale.copy_(torch.log(flat.std(0).clamp_min(1e-6)))
        self.initialized.fill_(True)
        self._ready = True

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(x, "forward")
        if not self._ready:
            self.initialized.fill_(True)
            self._ready = True
        y = x * torch.exp(self._view(self.log_scale, x)) + self._view(self.shift, x)
        return y, self._ladj(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(y, "inverse")
        if not self._ready and self.training:
            self._initialize(y)
        x = (y - self._view(self.shift, y)) * torch.exp(-self._view(self.log_scale, y))
        return x, -self._ladj(y)
