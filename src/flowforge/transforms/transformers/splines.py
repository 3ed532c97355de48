"""Monotone spline transformers: piecewise linear, piecewise quadratic, rational quadratic.

Each acts on an interval ``[lower, upper]`` and is the identity outside it, so inputs
beyond the bound never produce NaN. Each is written once here and reused by the
elementwise, coupling and autoregressive layers.

References:
    Müller, McWilliams, Rousselle, Gross, Novák. "Neural Importance Sampling". ACM TOG 2019
    (piecewise linear and piecewise quadratic couplings).
    Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows". NeurIPS 2019.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Transformer, bin_index, knots, normalized_bins, softplus_inverse

__all__ = ["PiecewiseLinearTransformer", "PiecewiseQuadraticTransformer", "RQSplineTransformer"]


class _Interval(Transformer):
    """Shared handling of the interval and the identity outside it."""

    def __init__(self, bins: int, lower: float, upper: float) -> None:
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins must be a positive integer; got {bins}")
        if not lower < upper:
            raise ValueError(f"need lower < upper; got lower={lower}, upper={upper}")
        self.bins = int(bins)
        self.lower = float(lower)
        self.upper = float(upper)

    def config(self) -> dict:
        return {"bins": self.bins, "lower": self.lower, "upper": self.upper}

    def _inside(self, v: Tensor) -> tuple[Tensor, Tensor]:
        inside = (v >= self.lower) & (v <= self.upper)
        return inside, v.clamp(self.lower, self.upper)

    def _apply(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        params = self._expand(params, v)
        inside, vc = self._inside(v)
        out, ladj = self._map(vc, params, inverse)
        return torch.where(inside, out, v), torch.where(inside, ladj, torch.zeros_like(ladj))

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(y, params, inverse=True)

    def _map(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class PiecewiseLinearTransformer(_Interval):
    """Piecewise linear map with ``K`` equal-width bins (seed 004's definition).

    On ``u = (x - lower) / (upper - lower)`` in ``[0, 1]`` with bin heights ``h_k > 0``,
    ``sum h_k = 1``: ``f(u) = sum_{k<b} h_k + (K u - b) h_b`` where ``b`` is the bin of
    ``u``; elementwise log-det ``log(K h_b)``. Parameters per element: ``K`` raw heights
    (softmax; each at least ``min_height``).
    """

    def __init__(self, bins: int = 8, *, lower: float = 0.0, upper: float = 1.0, min_height: float = 1e-3):
        super().__init__(bins, lower, upper)
        self.min_height = min_height
        self.n_params = self.bins

    def config(self) -> dict:
        return {**super().config(), "min_height": self.min_height}

    def _map(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        h = normalized_bins(params, self.min_height)
        cum_h = knots(h, 0.0, 1.0)
        u = (v - self.lower) / (self.upper - self.lower)
        if not inverse:
            b = (u * k).floor().clamp(0, k - 1).long().unsqueeze(-1)
            hb = h.gather(-1, b).squeeze(-1)
            out = cum_h.gather(-1, b).squeeze(-1) + (u * k - b.squeeze(-1)) * hb
            ladj = torch.log(k * hb)
        else:
            b = bin_index(cum_h, u)
            hb = h.gather(-1, b).squeeze(-1)
            out = (b.squeeze(-1) + (u - cum_h.gather(-1, b).squeeze(-1)) / hb) / k
            ladj = -torch.log(k * hb)
        return self.lower + (self.upper - self.lower) * out, ladj


class PiecewiseQuadraticTransformer(_Interval):
    """Piecewise quadratic map: the CDF of a piecewise linear density (Müller et al. 2019).

    ``K`` bins with widths ``w_k`` (softmax) and ``K + 1`` vertex heights ``v_k > 0``
    normalised so that the piecewise linear density integrates to one on ``[0, 1]``. In
    bin ``b`` at fraction ``a``: ``f = F_b + a w_b v_b + a^2 w_b (v_{b+1} - v_b) / 2`` and
    log-det ``log(v_b + a (v_{b+1} - v_b))``. The inverse solves the quadratic in ``a``
    (in the cancellation-free form). Parameters per element: ``2K + 1``.
    """

    def __init__(self, bins: int = 8, *, lower: float = 0.0, upper: float = 1.0, min_width: float = 1e-3):
        super().__init__(bins, lower, upper)
        self.min_width = min_width
        self.n_params = 2 * self.bins + 1

    def config(self) -> dict:
        return {**super().config(), "min_width": self.min_width}

    def _map(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        w = normalized_bins(params[..., :k], self.min_width)
        vert = torch.exp(params[..., k:].clamp(-10.0, 10.0))
        area = ((vert[..., :-1] + vert[..., 1:]) / 2 * w).sum(-1, keepdim=True)
        vert = vert / area
        cum_w = knots(w, 0.0, 1.0)
        cdf = F.pad(torch.cumsum((vert[..., :-1] + vert[..., 1:]) / 2 * w, dim=-1), (1, 0))
        cdf = cdf / cdf[..., -1:]  # exact 1 at the top despite rounding
        u = (v - self.lower) / (self.upper - self.lower)
        b = bin_index(cdf if inverse else cum_w, u)

        def at(t: Tensor) -> Tensor:
            return t.gather(-1, b).squeeze(-1)

        wb, v0, v1, c0, x0 = at(w), at(vert[..., :-1]), at(vert[..., 1:]), at(cdf), at(cum_w)
        if not inverse:
            a = ((u - x0) / wb).clamp(0, 1)
            out = c0 + a * wb * v0 + a * a * wb * (v1 - v0) / 2
            ladj = torch.log(v0 + a * (v1 - v0))
        else:
            qa, qb, qc = wb * (v1 - v0) / 2, wb * v0, (u - c0).clamp_min(0)
            disc = (qb * qb + 4 * qa * qc).clamp_min(0)
            a = (2 * qc / (qb + torch.sqrt(disc))).clamp(0, 1)
            out = x0 + a * wb
            ladj = -torch.log(v0 + a * (v1 - v0))
        return self.lower + (self.upper - self.lower) * out, ladj


class RQSplineTransformer(_Interval):
    """Monotone rational-quadratic spline on ``[-bound, bound]``, identity outside.

    ``K`` bins with widths, heights and ``K - 1`` interior knot derivatives; the boundary
    derivatives are 1 so that the map joins the identity tails smoothly (Durkan et al. 2019,
    with linear tails). Each width/height is at least ``min_width``/``min_height`` of the
    interval and each derivative at least ``min_derivative``. In bin ``k`` with
    ``xi = (x - x_k)/w_k``, ``s = h_k/w_k``:

    ``y = y_k + h_k (s xi^2 + d_k xi (1 - xi)) / (s + (d_{k+1} + d_k - 2 s) xi (1 - xi))``.

    The inverse solves a quadratic in ``xi`` in closed form. Parameters per element:
    ``3K - 1``. Zero parameters give the identity. The width and height logits are
    multiplied by ``logit_scale`` before the softmax: a reparametrisation that changes no
    reachable map, only how fast a trained conditioner moves the bins (Adam's steps do not
    scale with the gradient, so a factor below 1 slows them by that factor). nflows divides
    these logits by the square root of the conditioner's width.
    """

    def __init__(
        self,
        bins: int = 8,
        *,
        bound: float = 5.0,
        min_width: float = 1e-3,
        min_height: float = 1e-3,
        min_derivative: float = 1e-3,
        logit_scale: float = 1.0,
    ) -> None:
        if not bound > 0:
            raise ValueError(f"bound must be positive; got {bound}")
        if not (math.isfinite(logit_scale) and logit_scale > 0):
            raise ValueError(f"logit_scale must be a positive finite number; got {logit_scale}")
        super().__init__(bins, -bound, bound)
        self.bound = float(bound)
        self.min_width, self.min_height, self.min_derivative = min_width, min_height, min_derivative
        self.logit_scale = float(logit_scale)
        self.n_params = 3 * self.bins - 1
        self._shift = softplus_inverse(1.0 - min_derivative)

    def config(self) -> dict:
        return {
            "bins": self.bins,
            "bound": self.bound,
            "min_width": self.min_width,
            "min_height": self.min_height,
            "min_derivative": self.min_derivative,
            "logit_scale": self.logit_scale,
        }

    def _map(self, v: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        wl, hl = params[..., :k], params[..., k : 2 * k]
        if self.logit_scale != 1.0:
            wl, hl = wl * self.logit_scale, hl * self.logit_scale
        w = normalized_bins(wl, self.min_width)
        h = normalized_bins(hl, self.min_height)
        d = self.min_derivative + F.softplus(params[..., 2 * k :] + self._shift)
        d = F.pad(d, (1, 1), value=1.0)
        xs = knots(w, self.lower, self.upper)
        ys = knots(h, self.lower, self.upper)
        b = bin_index(ys if inverse else xs, v)

        def at(t: Tensor) -> Tensor:
            return t.gather(-1, b).squeeze(-1)

        xk, yk, dk, dk1 = at(xs), at(ys), at(d[..., :-1]), at(d[..., 1:])
        wk, hk = at(xs[..., 1:] - xs[..., :-1]), at(ys[..., 1:] - ys[..., :-1])
        s = hk / wk
        if not inverse:
            xi = ((v - xk) / wk).clamp(0, 1)
        else:
            dy = v - yk
            c2 = dk1 + dk - 2 * s
            qa = hk * (s - dk) + dy * c2
            qb = hk * dk - dy * c2
            qc = -s * dy
            disc = (qb * qb - 4 * qa * qc).clamp_min(0)
            xi = ((2 * qc) / (-qb - torch.sqrt(disc))).clamp(0, 1)
        om = xi * (1 - xi)
        denom = s + (dk1 + dk - 2 * s) * om
        deriv = s * s * (dk1 * xi * xi + 2 * s * om + dk * (1 - xi) ** 2) / (denom * denom)
        if not inverse:
            out = yk + hk * (s * xi * xi + dk * om) / denom
            return out, torch.log(deriv)
        return xk + xi * wk, -torch.log(deriv)
