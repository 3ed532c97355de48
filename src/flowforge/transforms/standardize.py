"""A fixed affine map between standardized and raw data units, fitted from data.

:func:`flowforge.fit` appends a :class:`Standardize` at the data end of a flow, so that
the layers before it see data with zero mean and unit variance per feature while
``flow.log_prob`` and ``flow.sample`` work in the user's raw units, the Jacobian of the
standardization included. Its values are buffers: they are saved with the weights and
never trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Transform
from .transformers import AffineTransformer

__all__ = ["Standardize"]


def _event_shape(features: int | Sequence[int]) -> tuple[int, ...]:
    shape = (int(features),) if isinstance(features, int) else tuple(int(f) for f in features)
    if not shape or any(f < 1 for f in shape):
        raise ValueError(f"features must be a positive int or a shape of positive ints; got {features!r}")
    return shape


class Standardize(Transform):
    """``y = mean + std * x`` featurewise, with ``mean`` and ``std`` fixed (buffers, not parameters).

    Forward (generative) maps standardized units to raw units; the inverse standardizes,
    ``x = (y - mean) / std``. Log-det of the forward ``sum_i log std_i`` (a constant).
    Starts as the identity; :meth:`fit_to` sets the values from data. Features whose
    standard deviation is zero (constant columns) keep ``std = 1`` so that nothing is
    divided by zero; their listing is returned by :meth:`fit_to`.

    Args:
        features: the event size (an int) or event shape (a tuple); statistics are per
            element of the event.

    Cost: O(n) in both directions.

    Examples:
        >>> import torch
        >>> t = Standardize(2)
        >>> constant = t.fit_to(torch.tensor([[1.0, 5.0], [5.0, 5.0]]))
        >>> t.mean, t.std, constant
        (tensor([3., 5.]), tensor([2., 1.]), [1])
        >>> t.inverse(torch.tensor([[5.0, 6.0]]))
        (tensor([[1., 1.]]), tensor([-0.6931]))
    """

    def __init__(self, features: int | Sequence[int]) -> None:
        super().__init__()
        self.event_shape = _event_shape(features)
        self.event_dim = len(self.event_shape)
        # The affine transformer without a bound: the log-scale is the stored value itself.
        self.transformer = AffineTransformer(scale_bound=None)
        self.register_buffer("loc", torch.zeros(self.event_shape))
        self.register_buffer("log_scale", torch.zeros(self.event_shape))

    @property
    def mean(self) -> Tensor:
        """The per-feature mean in raw units."""
        return self.loc

    @property
    def std(self) -> Tensor:
        """The per-feature scale in raw units (1 where the data were constant)."""
        return self.log_scale.exp()

    @torch.no_grad()
    def fit_to(self, data: Tensor) -> list[int]:
        """Set mean and standard deviation from ``data`` of shape ``(n, *event)``.

        Statistics are computed in float64. A feature counts as constant when its standard
        deviation is within 16 machine epsilons (of ``data``'s dtype) of its magnitude.

        Returns:
            The flat indices of the constant features (their scale stays 1).

        Raises:
            ValueError: when ``data`` has the wrong event shape, fewer than one row, or
                non-finite values.
        """
        k = self.event_dim
        if data.dim() < k + 1 or tuple(data.shape[-k:]) != self.event_shape:
            raise ValueError(
                f"Standardize.fit_to expects data of shape (n, {', '.join(map(str, self.event_shape))}); "
                f"got {tuple(data.shape)}"
            )
        flat = data.detach().reshape(-1, *self.event_shape).to(torch.float64)
        if flat.shape[0] < 1:
            raise ValueError("Standardize.fit_to needs at least one row of data")
        if not torch.isfinite(flat).all():
            raise ValueError("Standardize.fit_to got non-finite data; remove NaN and inf rows first")
        mean = flat.mean(0)
        std = flat.std(0, correction=0) if flat.shape[0] > 1 else torch.zeros_like(mean)
        eps = torch.finfo(data.dtype if data.is_floating_point() else torch.float32).eps
        constant = std <= 16 * eps * mean.abs()
        constant |= std == 0
        std = torch.where(constant, torch.ones_like(std), std)
        self.loc.copy_(mean.to(self.loc.dtype))
        self.log_scale.copy_(std.log().to(self.log_scale.dtype))
        return [int(i) for i in torch.nonzero(constant.reshape(-1)).reshape(-1)]

    def _params(self, like: Tensor) -> Tensor:
        return torch.stack([self.loc, self.log_scale], -1).to(like.dtype)

    def _sum(self, ladj: Tensor) -> Tensor:
        return ladj.sum(dim=tuple(range(-self.event_dim, 0)))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, ladj = self.transformer.forward(x, self._params(x))
        return y, self._sum(ladj)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, ladj = self.transformer.inverse(y, self._params(y))
        return x, self._sum(ladj)
