"""Importance reweighting of a fitted flow: posterior moments and the evidence ``log Z``.

With draws ``x_i ~ q`` and ratios ``w_i = p~(x_i) / q(x_i)``:

- self-normalised moments ``E_p[f] ~ sum_i w_i f(x_i) / sum_i w_i`` (PSIS-smoothed weights), which
  correct the flow's bias where ``q`` covers ``p`` (k-hat below 0.7);
- ``Z ~ mean_i w_i`` (raw weights, unbiased for ``Z``), ``log Z`` with its delta-method standard
  error ``sd(w) / (sqrt(n) mean(w))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .psis import psis

__all__ = ["LogZEstimate", "log_z", "reweighted_moments"]


def reweighted_moments(x: Tensor, log_w: Tensor, *, smooth: bool = True) -> tuple[Tensor, Tensor]:
    """Importance-reweighted posterior means and standard deviations per coordinate.

    Args:
        x: draws ``(n, d)`` (or ``(n,)``) from the proposal.
        log_w: their log importance ratios ``(n,)`` (``-inf`` allowed).
        smooth: use PSIS-smoothed weights (default) rather than raw ones.

    Returns:
        ``(mean, sd)``, each of shape ``(d,)`` (float64).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0); x = torch.randn(20000, 1, dtype=torch.float64)
        >>> m, s = reweighted_moments(x, 0.5 * x[:, 0])  # N(0, 1) tilted by e^(x/2) is N(0.5, 1)
        >>> round(m.item(), 1), round(s.item(), 1)
        (0.5, 1.0)
    """
    x = x.detach().double()
    x2 = x.reshape(x.shape[0], -1)
    lw = torch.as_tensor(log_w).detach().double().reshape(-1)
    if lw.shape[0] != x2.shape[0]:
        raise ValueError(f"x has {x2.shape[0]} draws but log_w has {lw.shape[0]}")
    if smooth:
        lw = psis(lw).log_weights.to(x2.device)
    w = torch.softmax(lw, 0)[:, None]
    mean = (w * x2).sum(0)
    var = (w * (x2 - mean) ** 2).sum(0)
    return mean, var.clamp_min(0).sqrt()


@dataclass
class LogZEstimate:
    """An importance-sampling estimate of ``log Z``.

    Attributes:
        log_z: ``log mean_i w_i``.
        se: delta-method standard error of ``log_z``; meaningless when k-hat exceeds 0.7
            (the variance of the weights may be infinite), so read it with :attr:`khat`.
        khat: PSIS k-hat of the weights used.
        n: draws.
    """

    log_z: float
    se: float
    khat: float
    n: int

    def __str__(self) -> str:
        return f"IS log Z {self.log_z:.4f} ± {self.se:.4f} (k-hat {self.khat:.2f}, n={self.n})"


def log_z(log_w: Tensor) -> LogZEstimate:
    """Importance-sampling estimate of ``log Z`` from log-weights ``log p~(x) - log r(x)``, ``x ~ r``.

    Unbiased for ``Z`` (not for ``log Z``: Jensen's gap is about ``-se^2 / 2``). A proposal that
    misses part of the target underestimates ``Z`` with a small, misleading ``se``: check k-hat,
    and use :func:`~flowforge.diagnostics.defensive_is` for mass the flow may have dropped.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0); x = torch.randn(20000, dtype=torch.float64)
        >>> est = log_z(-0.5 * (x / 1.1) ** 2 + 0.5 * x**2 - math.log(1.1))  # log Z = 0
        >>> abs(est.log_z) < 3 * est.se
        True
    """
    lw = torch.as_tensor(log_w).detach().double().reshape(-1)
    n = int(lw.shape[0])
    if torch.isnan(lw).any():
        raise ValueError("log-weights contain NaN; expected finite values or -inf")
    m = lw.max()
    if not torch.isfinite(m):
        return LogZEstimate(-math.inf, math.nan, math.inf, n)
    w = torch.exp(lw - m)
    mean = w.mean()
    se = float(w.std() / (math.sqrt(n) * mean)) if n > 1 else math.nan
    return LogZEstimate(float(m + torch.log(mean)), se, psis(lw).khat if n >= 10 else math.nan, n)
