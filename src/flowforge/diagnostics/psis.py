"""Pareto-smoothed importance sampling: the k-hat diagnostic and the importance-sampling ESS.

The generalized Pareto fit to the largest importance ratios and the smoothing are arviz-stats'
(``arviz_stats.base.array_stats.psislw``), not reimplemented here; this module adapts them to
VI log-weights and handles the cases arviz-stats refuses: constant weights (an exact fit) and
too few non-zero weights.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["KHAT_BAD", "KHAT_GOOD", "PSISResult", "psis"]

KHAT_GOOD = 0.5  # below: importance sampling converges at the usual rate
KHAT_BAD = 0.7  # above: estimates from these weights are unreliable (Vehtari et al. 2024)


@dataclass
class PSISResult:
    """What PSIS says about a set of log importance ratios.

    Attributes:
        khat: the Pareto shape estimate of the right tail of the weights. Below 0.5 the fit is
            good for importance sampling; above 0.7 importance estimates are unreliable and the
            ELBO is likely far from ``log Z``. ``-inf`` for constant weights (``q`` equals the
            target up to its constant on every draw); ``inf`` when fewer draws have non-zero
            weight than the tail fit needs.
        ess: the importance-sampling effective sample size ``1 / sum(w_i^2)`` of the smoothed,
            normalised weights (between 1 and ``n``).
        n: the number of draws.
        log_weights: the smoothed log-weights, normalised (``logsumexp = 0``), as a float64 tensor.
    """

    khat: float
    ess: float
    n: int
    log_weights: Tensor

    @property
    def ess_fraction(self) -> float:
        """``ess / n``: 1 for a perfect fit."""
        return self.ess / self.n

    @property
    def reliable(self) -> bool:
        return self.khat <= KHAT_BAD

    def __str__(self) -> str:
        return f"PSIS k-hat {self.khat:.3f}, ESS {self.ess:.0f} of {self.n} ({100 * self.ess_fraction:.1f}%)"


def _tail_size(n: int) -> int:
    # arviz-stats' rule for the number of tail draws, with r_eff = 1 (independent draws).
    return math.floor(3 * math.sqrt(n)) if n > 225 else n // 5


def psis(log_w: Tensor | np.ndarray) -> PSISResult:
    """PSIS k-hat and ESS of log importance ratios ``log w = log p~(x) - log q(x)``, ``x ~ q``.

    ``-inf`` entries are draws of zero target density (zero weight); NaN is refused.

    Args:
        log_w: shape ``(n,)``, ``n >= 10``.

    Returns:
        A :class:`PSISResult`.

    Raises:
        ValueError: NaN or ``+inf`` in ``log_w``, fewer than 10 draws, or no non-zero weight.

    Cost: O(n log n) (a sort and a small optimisation).

    References:
        Vehtari, Simpson, Gelman, Yao, Gabry. "Pareto Smoothed Importance Sampling". JMLR 2024.
        Yao, Vehtari, Simpson, Gelman. "Yes, but Did It Work?: Evaluating Variational Inference".
        ICML 2018.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0); x = torch.randn(4000, dtype=torch.float64)
        >>> r = psis(-0.5 * (x / 0.9) ** 2 + 0.5 * x**2)  # q = N(0, 1), p = N(0, 0.81): bounded weights
        >>> r.khat < 0.5, r.ess_fraction > 0.9
        (True, True)
        >>> psis(torch.zeros(100)).khat  # constant weights: q matches p exactly
        -inf
    """
    lw = torch.as_tensor(log_w).detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
    n = lw.shape[0]
    if n < 10:
        raise ValueError(f"psis needs at least 10 draws; got {n}")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError(
            f"log-weights contain {int(np.isnan(lw).sum())} NaN and {int(np.isposinf(lw).sum())} +inf "
            "values; expected finite values or -inf (zero target density)"
        )
    finite = np.isfinite(lw)
    if not finite.any():
        raise ValueError("every log-weight is -inf: the target has zero density at all draws")
    top = lw[finite]
    if top.max() - top.min() <= 1e-12 * max(1.0, abs(float(top.max()))):
        # Constant on the support: the smoothed and raw weights coincide; no tail to fit.
        log_norm = np.where(finite, -math.log(finite.sum()), -math.inf)
        return PSISResult(-math.inf, float(finite.sum()), n, torch.from_numpy(log_norm))
    if finite.sum() <= _tail_size(n):
        raw = lw - np.logaddexp.reduce(top)
        return PSISResult(math.inf, float(1 / np.exp(2 * raw[finite]).sum()), n, torch.from_numpy(raw))

    from arviz_stats.base import array_stats  # here, to keep `import flowforge` light

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # arviz-stats smooths the weights exp(-ary) (its LOO convention): pass -log w.
            smoothed, khat = array_stats.psislw(-lw, r_eff=1.0)
        khat = float(khat)
    except ValueError:
        # arviz-stats refuses a tail of identical values: the largest weights are tied at a
        # bound, i.e. the ratios are bounded, the best case for importance sampling.
        smoothed, khat = lw - np.logaddexp.reduce(top), -math.inf
    smoothed = np.asarray(smoothed, dtype=np.float64)
    ess = float(1.0 / np.exp(2 * smoothed[np.isfinite(smoothed)]).sum())
    return PSISResult(khat, ess, n, torch.from_numpy(smoothed))
