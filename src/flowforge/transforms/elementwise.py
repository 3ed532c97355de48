"""Fixed elementwise nonlinearities (seed 004, "Elementwise flows").

Each maps every element independently, so the Jacobian is diagonal and the
log-determinant is the sum of the log-derivatives over the event. They do not mix
dimensions and cannot create correlations on their own; alternate them with linear
layers or use them inside couplings.

Points outside a map's range (``Logit`` of 1.5, ``Exp.inverse`` of -1) are not errors:
the returned ``ladj`` is ``-inf`` there, so a flow's density is ``-inf`` and never NaN,
and the returned point is a finite placeholder so that later layers stay finite.

Cost: O(n) in both directions, closed-form inverses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Transform

__all__ = ["Exp", "LeakyReLU", "Logit", "Sigmoid", "Softplus", "Tanh"]


def _guard(v: Tensor, ok: Tensor, safe: float) -> Tensor:
    # Substituting a safe value *before* the math keeps NaN out of gradients too.
    return torch.where(ok, v, torch.full_like(v, safe))


class _Pointwise(Transform):
    """Base of the fixed elementwise maps; ``event_dim`` trailing dimensions are summed."""

    def __init__(self, *, event_dim: int = 1) -> None:
        super().__init__()
        if event_dim < 0:
            raise ValueError(f"event_dim must be >= 0; got {event_dim}")
        self.event_dim = int(event_dim)

    def _sum(self, ladj: Tensor) -> Tensor:
        return ladj.sum(dim=tuple(range(-self.event_dim, 0))) if self.event_dim else ladj

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, ladj = self._f(x)
        return y, self._sum(ladj)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, ladj = self._finv(y)
        return x, self._sum(ladj)

    @staticmethod
    def _restricted(v: Tensor, ok: Tensor, safe: float, fn) -> tuple[Tensor, Tensor]:
        out, ladj = fn(_guard(v, ok, safe))
        return torch.where(ok, out, torch.zeros_like(out)), torch.where(
            ok, ladj, torch.full_like(ladj, -math.inf)
        )

    def _f(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _finv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class LeakyReLU(_Pointwise):
    """``y = x`` for ``x >= 0`` and ``y = a x`` otherwise, with slope ``a > 0``.

    Log-det: ``log a`` per negative element. Not differentiable at 0 (a null set).

    Cost: O(n) in both directions; closed-form inverse.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): elementwise flows.

    Examples:
        >>> import torch
        >>> LeakyReLU(0.5)(torch.tensor([[-2.0, 3.0]]))
        (tensor([[-1.,  3.]]), tensor([-0.6931]))
    """

    def __init__(self, negative_slope: float = 0.01, *, event_dim: int = 1) -> None:
        super().__init__(event_dim=event_dim)
        if not negative_slope > 0:
            raise ValueError(f"negative_slope must be > 0 for invertibility; got {negative_slope}")
        self.negative_slope = float(negative_slope)
        self._log_slope = math.log(self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _f(self, x: Tensor) -> tuple[Tensor, Tensor]:
        neg = x < 0
        return torch.where(neg, x * self.negative_slope, x), neg.to(x.dtype) * self._log_slope

    def _finv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        neg = y < 0
        return torch.where(neg, y / self.negative_slope, y), -neg.to(y.dtype) * self._log_slope


class Exp(_Pointwise):
    """``y = exp(x)``, from the real line to the positive reals. Log-det ``sum x``.

    Cost: O(n) in both directions; closed-form inverse.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): elementwise flows.

    Examples:
        >>> import torch
        >>> Exp().inverse(torch.tensor([[1.0, -1.0]]))[1]
        tensor([-inf])
    """

    def _f(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.exp(x), x

    def _finv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        def fn(v):
            x = torch.log(v)
            return x, -x

        return self._restricted(y, y > 0, 1.0, fn)


def _sigmoid(x: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sigmoid(x), -F.softplus(-x) - F.softplus(x)


def _logit(v: Tensor) -> tuple[Tensor, Tensor]:
    lv, l1v = torch.log(v), torch.log1p(-v)
    return lv - l1v, -lv - l1v


class Sigmoid(_Pointwise):
    """``y = 1 / (1 + exp(-x))``, from the real line to (0, 1).

    Log-det ``sum log s(x) + log s(-x)``; the inverse is the logit, and points outside
    (0, 1) have density zero.

    Cost: O(n) in both directions; closed-form inverse.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): elementwise flows.

    Examples:
        >>> import torch
        >>> Sigmoid().inverse(torch.tensor([[0.5, 1.5]]))
        (tensor([[0., 0.]]), tensor([-inf]))
    """

    def _f(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _sigmoid(x)

    def _finv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._restricted(y, (y > 0) & (y < 1), 0.5, _logit)


class Logit(_Pointwise):
    """``y = log(x / (1 - x))``, from (0, 1) to the real line: the inverse of ``Sigmoid``.

    Useful as the first generative layer for data on the unit cube (the last layer a
    data point meets in the normalizing direction is its sigmoid).

    Cost: O(n) in both directions; closed-form inverse.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): elementwise flows.

    Examples:
        >>> import torch
        >>> Logit()(torch.tensor([[1.5]]))[1]
        tensor([-inf])
    """

    def _f(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._restricted(x, (x > 0) & (x < 1), 0.5, _logit)

    def _finv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return _sigmoid(y)


class Tanh(_Pointwise):
    """``y = tanh(x)``, from the real line to (-1, 1). Log-det ``sum log(1 - tanh(x)^2)``.

    Cost: O(n) in both directions; closed-form inverse.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): elementwise flows.

    Examples:
        >>> import torch
        >>> Tanh()(torch.zeros(1, 2))
        (tensor([[0., 0.]]), tensor([0.]))
    """

    def _f(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # log(1 - tanh^2) = 2 (log 2 - x - softplus(-2x)), stable for large |x|.
        return torch.tanh(x), 2 * (math.log(2.0) - x - F.softplus(-2 * x))

    def _finv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        def fn(v):
            return torch.atanh(v), -torch.log1p(-v * v)

        return self._restricted(y, y.abs() < 1, 0.0, fn)


class Softplus(_Pointwise):
    """``y = log(1 + exp(x))``, from the real line to the positive reals.

    Log-det ``sum log sigmoid(x)``; the inverse is ``y + log(1 - exp(-y))``.

    Cost: O(n) in both directions; closed-form inverse.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): elementwise flows.

    Examples:
        >>> import torch
        >>> y, _ = Softplus()(torch.tensor([[0.3]])); Softplus().inverse(y)[0]
        tensor([[0.3000]])
    """

    def _f(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.softplus(x), -F.softplus(-x)

    def _finv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        def fn(v):
            x = v + torch.log(-torch.expm1(-v))
            return x, F.softplus(-x)

        return self._restricted(y, y > 0, 1.0, fn)
