"""Radial flows (Rezende & Mohamed 2015; seeds 000 and 003) with a closed-form inverse."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import MLP
from .base import Transform
from .planar import MARGIN

__all__ = ["Radial"]


def _softplus_inv(v: float) -> float:
    return v + math.log(-math.expm1(-v))


class Radial(Transform):
    """Radial layer ``x = z + beta (z - z0) / (alpha + r)``, ``r = |z - z0|``: contraction or
    expansion around a reference point ``z0``.

    **Map and log-det.** With ``h = 1 / (alpha + r)`` the Jacobian is
    ``(1 + beta h) I + beta h'(r) r rr^T`` along the unit direction ``rr``, so
    ``log|det| = (d - 1) log(1 + beta h) + log(1 + beta alpha h^2)`` (using
    ``1 + beta h + beta h' r = 1 + beta alpha / (alpha + r)^2``). Cost O(d) per sample.

    **Constraint.** ``alpha = softplus(alpha_raw) > 0`` and
    ``beta = -(1 - 1e-4) alpha + softplus(beta_raw)`` give ``beta >= -alpha`` (Rezende &
    Mohamed, appendix A) with a margin, so the radius map ``r -> r (1 + beta h)`` is
    strictly increasing with derivative at least ``1e-4`` and the layer is invertible.
    Parameters start at ``beta = 0`` (the identity).

    **Inverse, closed form.** The direction of ``z - z0`` is kept, so with
    ``R = |x - z0|`` the radius solves ``R (alpha + r) = r (alpha + r + beta)``, i.e.
    ``r^2 + (alpha + beta - R) r - alpha R = 0``, whose one non-negative root is taken in
    a cancellation-free form; then ``z = z0 + (x - z0) (alpha + r) / (alpha + r + beta)``.
    Cost O(d) per sample.

    **Expressiveness.** Seed 000 lists the radial layer among the four base layers it
    studies; its universality result in 1-D is for ReLU planar layers and its depth lower
    bounds for planar and Householder layers, so no guarantee is proved for radial stacks.
    One radial layer only rescales radii around one point (seed 003 shows the contraction
    and expansion); seed 001's depth lower bound for layers with few parameters and
    bounded Lipschitz constant applies (``d + 2`` parameters per layer).

    Args:
        features: dimension ``d``.
        context_features: if given, ``(z0, alpha_raw, beta_raw)`` get offsets from
            ``MLP(context)`` (starting at zero).
        hidden: hidden sizes of that MLP.

    Cost: O(d) per sample in both directions.

    References:
        Rezende & Mohamed. "Variational Inference with Normalizing Flows". ICML 2015.
        Tabak & Turner. "A Family of Nonparametric Density Estimation Algorithms". CPAM 2013.

    Examples:
        >>> import torch
        >>> t = Radial(2).double()
        >>> with torch.no_grad():
        ...     _ = t.beta_raw.fill_(-30.0)  # beta close to -alpha: strong contraction, still invertible
        >>> z = torch.randn(5, 2, dtype=torch.float64)
        >>> x, ladj = t(z)
        >>> bool(torch.allclose(t.inverse(x)[0], z)), bool((ladj < 0).all())
        (True, True)
    """

    def __init__(
        self,
        features: int,
        *,
        context_features: int | None = None,
        hidden: Sequence[int] = (32, 32),
    ) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"features must be a positive integer; got {features!r}")
        d = int(features)
        self.features = d
        self.event_shape = (d,)
        self.center = nn.Parameter(torch.randn(d))
        self.alpha_raw = nn.Parameter(torch.zeros(()))
        self.beta_raw = nn.Parameter(torch.tensor(_softplus_inv((1 - MARGIN) * math.log(2.0))))
        self.hypernet = None
        if context_features is not None:
            if context_features < 1:
                raise ValueError(f"context_features must be positive; got {context_features}")
            self.context_features = int(context_features)
            self.hypernet = MLP(self.context_features, d + 2, hidden=hidden)

    def _params(self, context: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z0, a_raw, b_raw = (p.to(like.dtype) for p in (self.center, self.alpha_raw, self.beta_raw))
        if self.hypernet is not None:
            out = self.hypernet(context).to(like.dtype)
            d = self.features
            z0, a_raw, b_raw = z0 + out[..., :d], a_raw + out[..., d], b_raw + out[..., d + 1]
        alpha = F.softplus(a_raw)
        beta = -(1 - MARGIN) * alpha + F.softplus(b_raw)
        return z0, alpha, beta

    def _ladj(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1 / (alpha + r)
        return (self.features - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h * h)

    def _forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self._params(context, z)
        diff = z - z0
        r = torch.linalg.vector_norm(diff, dim=-1)
        x = z + (beta / (alpha + r)).unsqueeze(-1) * diff
        return x, self._ladj(r, alpha, beta).expand(z.shape[:-1])

    def _inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self._params(context, x)
        diff = x - z0
        big_r = torch.linalg.vector_norm(diff, dim=-1)
        c = alpha + beta - big_r
        disc = torch.sqrt(c * c + 4 * alpha * big_r)
        # Roots (-c +- disc)/2; the positive one without subtracting nearly equal numbers.
        r = torch.where(c <= 0, (disc - c) / 2, 2 * alpha * big_r / (disc + c))
        z = z0 + ((alpha + r) / (alpha + r + beta)).unsqueeze(-1) * diff
        return z, -self._ladj(r, alpha, beta).expand(x.shape[:-1])
