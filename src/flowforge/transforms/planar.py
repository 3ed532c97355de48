"""Planar flows (Rezende & Mohamed 2015; seeds 000 and 003) with an exact inverse.

``x = f(z) = z + u_hat h(w^T z + b)`` bends space along one hyperplane. The seeds and
the original paper use it only in the generative direction; here the inverse is exact
too (closed form for ReLU-type ``h``, a safeguarded 1-D root solve for smooth ``h``),
so a planar flow also evaluates densities of arbitrary points.

The activations' table below is shared with :mod:`~flowforge.transforms.sylvester`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import MLP
from ..solvers import solve_increasing
from .base import Transform

__all__ = ["Planar"]

# Keeps 1 + h' w^T u_hat >= MARGIN: a hair away from singular, so the inverse stays well posed.
MARGIN = 1e-4


@dataclass(frozen=True)
class Activation:
    """``h``, its derivative, ``sup h'`` and, for piecewise linear ``h``, its two slopes."""

    name: str
    negative_slope: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ("tanh", "softplus", "relu", "leaky_relu"):
            raise ValueError(
                f"activation must be 'tanh', 'softplus', 'relu' or 'leaky_relu'; got {self.name!r}"
            )
        if self.name == "leaky_relu" and not self.negative_slope > 0:
            raise ValueError(f"leaky_relu needs negative_slope > 0; got {self.negative_slope!r}")

    @property
    def piecewise_linear(self) -> bool:
        return self.name in ("relu", "leaky_relu")

    @property
    def slopes(self) -> tuple[float, float]:
        """(slope for negative arguments, slope for positive ones) of a piecewise linear ``h``."""
        return (self.negative_slope if self.name == "leaky_relu" else 0.0), 1.0

    @property
    def max_derivative(self) -> float:
        return max(1.0, self.slopes[0]) if self.piecewise_linear else 1.0

    def __call__(self, a: Tensor) -> Tensor:
        if self.name == "tanh":
            return torch.tanh(a)
        if self.name == "softplus":
            return F.softplus(a)
        neg, _ = self.slopes
        return torch.where(a >= 0, a, neg * a)

    def derivative(self, a: Tensor) -> Tensor:
        if self.name == "tanh":
            return 1 - torch.tanh(a) ** 2
        if self.name == "softplus":
            return torch.sigmoid(a)
        neg, _ = self.slopes
        # The derivative at the kink a = 0 is taken from the right (slope 1).
        return torch.where(a >= 0, torch.ones_like(a), torch.full_like(a, neg))


def constrain_inner(a: Tensor, act: Activation) -> Tensor:
    """Map a free ``a`` to ``m(a) > -1 / sup h'`` (plus a margin), with ``m(0) = 0``, increasing.

    ``m(a) = lo + softplus(a + c)`` with ``lo = -(1 - MARGIN) / sup h'`` and ``c`` chosen
    so that ``m(0) = 0``; ``m(a) ~ a`` for large ``a``. Rezende & Mohamed's appendix A
    uses ``-1 + softplus(a)`` for tanh, which is not the identity at 0.
    """
    lo = -(1.0 - MARGIN) / act.max_derivative
    c = math.log(math.expm1(-lo))
    return lo + F.softplus(a + c)


class Planar(Transform):
    """Planar layer ``x = z + u_hat h(w^T z + b)``, made invertible by construction.

    **Map and log-det.** With ``s = w^T u_hat``, the Jacobian is ``I + h'(w^T z + b) u_hat w^T``
    (matrix determinant lemma): ``log|det| = log(1 + h'(w^T z + b) s)``. Cost O(d) per sample.

    **Constraint** (Rezende & Mohamed, appendix A). The map is invertible iff
    ``1 + h'(.) s > 0`` everywhere, i.e. ``s > -1 / sup h'``: ``s > -1`` for tanh, softplus,
    ReLU and leaky ReLU with slope <= 1 (``s > -1/slope`` for a slope above 1). The free
    ``u`` is replaced by ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` with
    ``m(a) = -(1 - 1e-4) / sup h' + softplus(a + c)``, ``c`` such that ``m(0) = 0`` (so
    ``u = 0`` is the identity); hence ``s = m(w^T u)`` and ``1 + h' s >= 1e-4``.

    **Inverse.** Along ``w`` the map is the scalar monotone map ``a -> a + s h(a + b)`` of
    ``a = w^T z``; orthogonal to ``w`` it only shifts by ``u_hat h``. So solve
    ``a + s h(a + b) = w^T x``, then ``z = x - u_hat h(a + b)``. For ReLU and leaky ReLU the
    scalar map is piecewise linear with its kink at ``a = -b`` and is inverted in closed
    form; for tanh and softplus :func:`flowforge.solvers.solve_increasing` (bracketed
    Newton, ``tol`` relative, 1e-10 by default in float64) solves it, O(d + iterations)
    per sample, raising :class:`~flowforge.InversionError` if it cannot.

    **ReLU.** The log-det jumps at ``w^T z + b = 0`` (``h'`` is 0 or 1 there; the value
    from the right is used), so it is not differentiable in ``z``, ``w`` or ``b`` on that
    hyperplane; the density of a ReLU planar flow is discontinuous across it.

    **Expressiveness.** Seed 000 (Kong & Chaudhuri 2020) proves that in 1-D, ReLU planar
    layers are universal: stacks of them map a Gaussian arbitrarily close (in total
    variation) to any density, through piecewise Gaussian densities (the seed shows 50 and
    300 layers); ``flowforge experiment planar-1d`` re-runs it. In ``d > 1`` the same seed
    proves a depth lower bound: planar layers with bounded parameters and tanh/sigmoid-like
    ``h`` need ``~Omega(d^kappa)`` layers for some pairs of distributions. Seed 001
    (Koehler et al.) adds a depth lower bound for any layerwise-invertible family with few
    parameters per layer and bounded Lipschitz constant (planar layers have ``2d + 1``),
    for mixtures of many Gaussians.

    Args:
        features: dimension ``d``.
        activation: ``"tanh"`` (default), ``"softplus"``, ``"relu"`` or ``"leaky_relu"``.
        negative_slope: the slope of ``leaky_relu`` for negative arguments.
        context_features: if given, ``(u, w, b)`` are offsets from ``MLP(context)`` added to
            the free ones (a hypernetwork; it starts at zero).
        hidden: hidden sizes of that MLP.
        tol: relative tolerance of the iterative inverse (tanh, softplus).
        max_iter: iteration cap of the iterative inverse.

    Cost: O(d) per sample forward and for the closed-form inverse; O(d + k) with ``k``
    root-solver iterations (typically 5-15) for tanh and softplus.

    References:
        Rezende & Mohamed. "Variational Inference with Normalizing Flows". ICML 2015.
        Kong & Chaudhuri. "The Expressive Power of a Class of Normalizing Flow Models". AISTATS 2020.

    Examples:
        >>> import torch
        >>> t = Planar(3, activation="tanh").double()
        >>> with torch.no_grad():
        ...     _ = t.u.fill_(-5.0)  # pushes w^T u far below -1: the constraint keeps it invertible
        >>> z = torch.randn(4, 3, dtype=torch.float64)
        >>> x, ladj = t(z)
        >>> z_back, ladj_back = t.inverse(x)
        >>> bool((z_back - z).abs().max() < 1e-9), bool(torch.allclose(ladj, -ladj_back))
        (True, True)
    """

    inverse_method = (
        "closed form along w (ReLU, leaky ReLU); bracketed Newton root solve along w (tanh, softplus)"
    )

    def __init__(
        self,
        features: int,
        *,
        activation: str = "tanh",
        negative_slope: float = 0.2,
        context_features: int | None = None,
        hidden: Sequence[int] = (32, 32),
        tol: float = 1e-10,
        max_iter: int = 100,
    ) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"features must be a positive integer; got {features!r}")
        d = int(features)
        self.features = d
        self.event_shape = (d,)
        self.act = Activation(activation, float(negative_slope) if activation == "leaky_relu" else 0.0)
        self.iterative = not self.act.piecewise_linear
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.w = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.u = nn.Parameter(torch.zeros(d))
        self.b = nn.Parameter(torch.zeros(()))
        self.hypernet = None
        if context_features is not None:
            if context_features < 1:
                raise ValueError(f"context_features must be positive; got {context_features}")
            self.context_features = int(context_features)
            self.hypernet = MLP(self.context_features, 2 * d + 1, hidden=hidden)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.act.name!r}"

    def _params(self, context: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(u_hat, w, b, s = w^T u_hat)`` with any context batch dimensions in front."""
        u, w, b = self.u.to(like.dtype), self.w.to(like.dtype), self.b.to(like.dtype)
        if self.hypernet is not None:
            out = self.hypernet(context).to(like.dtype)
            d = self.features
            u, w, b = u + out[..., :d], w + out[..., d : 2 * d], b + out[..., 2 * d]
        wu = (w * u).sum(-1)
        # tiny keeps w = 0 finite; then w^T u ~ 0 too, so the constraint still holds.
        w2 = (w * w).sum(-1) + torch.finfo(like.dtype).tiny
        u_hat = u + ((constrain_inner(wu, self.act) - wu) / w2).unsqueeze(-1) * w
        return u_hat, w, b, (w * u_hat).sum(-1)

    def _forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u_hat, w, b, s = self._params(context, z)
        pre = (z * w).sum(-1) + b
        x = z + u_hat * self.act(pre).unsqueeze(-1)
        ladj = torch.log1p(s * self.act.derivative(pre))
        return x, ladj.expand(z.shape[:-1])

    def _inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u_hat, w, b, s = self._params(context, x)
        t = (x * w).sum(-1)
        if self.act.piecewise_linear:
            neg, pos = self.act.slopes
            # f(a) = a + s h(a + b) has its kink at a = -b where f(-b) = -b.
            k = torch.where(t + b >= 0, torch.full_like(t, pos), torch.full_like(t, neg))
            a = (t - s * k * b) / (1 + s * k)
        else:

            def f(a: Tensor) -> tuple[Tensor, Tensor]:
                return a + s * self.act(a + b), 1 + s * self.act.derivative(a + b)

            # tanh is bounded by 1, so the root is within |s| of t; softplus grows the bracket.
            half = s.detach().abs() + 1
            t, half = torch.broadcast_tensors(t, half)
            a = solve_increasing(f, t, lower=t - half, upper=t + half, tol=self.tol, max_iter=self.max_iter)
        pre = a + b
        z = x - u_hat * self.act(pre).unsqueeze(-1)
        ladj = -torch.log1p(s * self.act.derivative(pre))
        return z, ladj.expand(x.shape[:-1])
