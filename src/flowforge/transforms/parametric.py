"""Learnable elementwise layers: one transformer, parameters per feature (seed 004).

``Elementwise(transformer, features)`` applies a :mod:`transformer
<flowforge.transforms.transformers>` to every feature with its own learned parameters;
with ``context_features`` the parameters come from a small network of the context
instead (a conditional elementwise layer, no separate class). The spline layers below
are this with a particular transformer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nets import MLP
from .base import Transform
from .transformers import (
    PiecewiseLinearTransformer,
    PiecewiseQuadraticTransformer,
    RQSplineTransformer,
    Transformer,
)

__all__ = ["Elementwise", "PiecewiseLinear", "PiecewiseQuadratic", "RationalQuadraticSpline"]


def _event_shape(features: int | Sequence[int]) -> tuple[int, ...]:
    shape = (int(features),) if isinstance(features, int) else tuple(int(f) for f in features)
    if not shape or any(f < 1 for f in shape):
        raise ValueError(f"features must be a positive int or a shape of positive ints; got {features!r}")
    return shape


class Elementwise(Transform):
    """A transformer applied featurewise with learned (or context-dependent) parameters.

    ``y_i = f(x_i; theta_i)``; log-det ``sum_i log f'(x_i; theta_i)``. Parameters start
    at zero, which is the identity map for every built-in transformer.

    Args:
        transformer: the elementwise bijection (see ``flowforge.transforms.transformers``).
        features: the event size (an int) or event shape (a tuple).
        context_features: if given, parameters are ``MLP(context)`` instead of free.
        hidden: hidden sizes of that MLP.

    Cost: O(n P) for ``P`` parameters per element, in both directions.

    References:
        Papamakarios et al. "Normalizing Flows for Probabilistic Modeling and Inference". JMLR 2021.

    Examples:
        >>> import torch
        >>> from flowforge.transforms.transformers import RQSplineTransformer
        >>> t = Elementwise(RQSplineTransformer(bins=4, bound=3.0), 2, context_features=1)
        >>> t(torch.randn(5, 2), context=torch.randn(5, 1))[1].shape
        torch.Size([5])
    """

    def __init__(
        self,
        transformer: Transformer,
        features: int | Sequence[int],
        *,
        context_features: int | None = None,
        hidden: Sequence[int] = (32, 32),
    ) -> None:
        super().__init__()
        if not isinstance(transformer, Transformer):
            raise TypeError(f"transformer must be a Transformer; got {type(transformer).__name__}")
        self.transformer = transformer
        self.event_shape = _event_shape(features)
        self.event_dim = len(self.event_shape)
        n = transformer.n_params
        if context_features is None:
            self.params = nn.Parameter(torch.zeros(*self.event_shape, n))
            self.hypernet = None
        else:
            if context_features < 1:
                raise ValueError(f"context_features must be positive; got {context_features}")
            self.context_features = int(context_features)
            numel = int(torch.Size(self.event_shape).numel())
            self.hypernet = MLP(self.context_features, numel * n, hidden=hidden)

    def extra_repr(self) -> str:
        return f"{self.transformer!r}, {super().extra_repr()}"

    def _params(self, context: Tensor | None) -> Tensor:
        if self.hypernet is None:
            return self.params
        if context is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass context=")
        out = self.hypernet(context)
        return out.reshape(*context.shape[:-1], *self.event_shape, self.transformer.n_params)

    def _sum(self, ladj: Tensor) -> Tensor:
        return ladj.sum(dim=tuple(range(-self.event_dim, 0)))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, ladj = self.transformer.forward(x, self._params(context))
        return y, self._sum(ladj)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, ladj = self.transformer.inverse(y, self._params(context))
        return x, self._sum(ladj)


class RationalQuadraticSpline(Elementwise):
    """Monotone rational-quadratic spline per feature on ``[-bound, bound]``, identity outside.

    See :class:`~flowforge.transforms.transformers.RQSplineTransformer` for the map and
    log-det and ``logit_scale``. Inverse in closed form (a quadratic per element). Cost O(n K).

    References:
        Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows". NeurIPS 2019.

    Examples:
        >>> import torch
        >>> t = RationalQuadraticSpline(2, bins=8, bound=4.0)
        >>> x = torch.randn(3, 2); bool(torch.allclose(t.inverse(t(x)[0])[0], x, atol=1e-5))
        True
    """

    def __init__(
        self,
        features: int | Sequence[int],
        *,
        bins: int = 8,
        bound: float = 5.0,
        context_features: int | None = None,
        hidden: Sequence[int] = (32, 32),
        min_derivative: float = 1e-3,
        logit_scale: float = 1.0,
    ) -> None:
        tr = RQSplineTransformer(bins, bound=bound, min_derivative=min_derivative, logit_scale=logit_scale)
        super().__init__(tr, features, context_features=context_features, hidden=hidden)


class PiecewiseLinear(Elementwise):
    """Piecewise linear map with ``K`` equal-width bins on ``[lower, upper]`` (seed 004).

    ``f(u) = sum_{k<b} h_k + (K u - b) h_b`` on the rescaled ``u`` in [0, 1], heights
    ``h_k > 0`` summing to one; log-det ``sum log(K h_b)``; identity outside the interval.
    Inverse in closed form. Cost O(n K).

    References:
        Müller et al. "Neural Importance Sampling". ACM TOG 2019. Prince, "Understanding
        Deep Learning", ch. 16.

    Examples:
        >>> import torch
        >>> t = PiecewiseLinear(3, bins=5)
        >>> t(torch.rand(4, 3))[0].shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        features: int | Sequence[int],
        *,
        bins: int = 8,
        lower: float = 0.0,
        upper: float = 1.0,
        context_features: int | None = None,
        hidden: Sequence[int] = (32, 32),
    ) -> None:
        tr = PiecewiseLinearTransformer(bins, lower=lower, upper=upper)
        super().__init__(tr, features, context_features=context_features, hidden=hidden)


class PiecewiseQuadratic(Elementwise):
    """Piecewise quadratic map (the CDF of a piecewise linear density) on ``[lower, upper]``.

    See :class:`~flowforge.transforms.transformers.PiecewiseQuadraticTransformer`.
    Inverse in closed form. Cost O(n K).

    References:
        Müller et al. "Neural Importance Sampling". ACM TOG 2019.

    Examples:
        >>> import torch
        >>> t = PiecewiseQuadratic(2, bins=4)
        >>> t(torch.rand(4, 2))[1].shape
        torch.Size([4])
    """

    def __init__(
        self,
        features: int | Sequence[int],
        *,
        bins: int = 8,
        lower: float = 0.0,
        upper: float = 1.0,
        context_features: int | None = None,
        hidden: Sequence[int] = (32, 32),
    ) -> None:
        tr = PiecewiseQuadraticTransformer(bins, lower=lower, upper=upper)
        super().__init__(tr, features, context_features=context_features, hidden=hidden)
