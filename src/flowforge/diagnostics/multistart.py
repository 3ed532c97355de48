"""Agreement between restarts: R fits of the same target from different seeds.

Reverse-KL fits are mode-seeking, so different seeds can settle on different modes with the
same ELBO (on a symmetric target exactly the same). Comparing the ELBOs does not reveal that;
cross-evaluating the fits does: for each pair ``(i, j)``, the share of fit ``i``'s draws where
fit ``j``'s density is negligible,

.. math::

    s_{ij} = P_{x \\sim q_i}\\big(q_j(x) < \\epsilon\\, q_i(x)\\big),

is near 0 when the fits agree and near the mass of the mode ``i`` holds alone otherwise.
``KL(q_i || q_j)`` is reported with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..flow import Flow
from .elbo import draw, in_dtype
from .reference import _flow_log_prob

__all__ = ["RestartAgreement", "restart_agreement"]


@dataclass
class RestartAgreement:
    """How R fitted flows compare.

    Attributes:
        elbos, elbo_ses: each fit's ELBO and its standard error.
        best: index of the fit with the highest ELBO (the one to keep).
        elbo_spread: highest minus lowest ELBO.
        kl: ``R x R`` Monte Carlo ``KL(q_i || q_j)`` (nats; ``inf`` where ``q_j`` vanishes on
            draws of ``q_i``).
        disjoint_share: ``R x R`` share of ``q_i``'s draws where ``q_j < threshold * q_i``.
        disagreements: for each flagged pair, ``{"i", "j", "share", "where"}`` with ``where`` the
            mean of ``q_i``'s draws that ``q_j`` misses.
        agree: no pair has a disjoint share above ``tolerance`` and the ELBO spread is within
            ``max(elbo_tolerance, 3 combined standard errors)``.
    """

    elbos: list
    elbo_ses: list
    best: int
    elbo_spread: float
    kl: list
    disjoint_share: list
    disagreements: list
    agree: bool
    threshold: float
    tolerance: float

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        head = f"{len(self.elbos)} restarts {'agree' if self.agree else 'DISAGREE'}"
        head += f"; ELBO spread {self.elbo_spread:.3f}, best #{self.best}"
        for d in self.disagreements[:3]:
            where = ", ".join(f"{v:.2f}" for v in d["where"])
            head += f"; fit {d['j']} misses {100 * d['share']:.0f}% of fit {d['i']} around ({where})"
        return head


@torch.no_grad()
def restart_agreement(
    flows: Sequence[Flow],
    target: Callable[[Tensor], Tensor],
    *,
    samples: int = 2000,
    threshold: float = 0.01,
    tolerance: float = 0.1,
    elbo_tolerance: float = 0.1,
    seed: int | None = 0,
    dtype: torch.dtype | None = torch.float64,
) -> RestartAgreement:
    """Cross-evaluate fitted flows (samples of fit i under the density of fit j) and compare ELBOs.

    Args:
        flows: two or more fits of the same target.
        target: the target.
        samples: draws per fit.
        threshold: ``q_j`` is negligible at ``x`` where ``q_j(x) < threshold * q_i(x)``.
        tolerance: a pair disagrees when more than this share of ``q_i``'s draws is negligible under ``q_j``.
        elbo_tolerance: ELBO spread (nats) tolerated beyond Monte Carlo error.
        seed: seed of the draws.
        dtype: evaluate copies of the flows in this dtype (default float64; ``None``: as they are).

    Cost: ``R`` generative passes and ``R (R - 1)`` inverse passes of ``samples`` draws.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import targets, transforms as T
        >>> def gaussian_at(c):
        ...     flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.Diagonal(2)])
        ...     with torch.no_grad(): _ = flow.transform[0].params[0, 0].fill_(c)
        ...     return flow
        >>> two_modes = targets.GaussianMixture(components=2)
        >>> r = restart_agreement([gaussian_at(4.0), gaussian_at(-4.0)], two_modes)
        >>> r.agree, round(r.disjoint_share[0][1], 2)
        (False, 1.0)
    """
    flows = [in_dtype(f, dtype) for f in flows]
    if len(flows) < 2:
        raise ValueError(f"restart_agreement needs at least 2 fits; got {len(flows)}")
    R = len(flows)
    draws = [draw(f, target, samples, seed=None if seed is None else seed + i) for i, f in enumerate(flows)]
    elbos, ses = [], []
    for d in draws:
        lw = d.log_w[torch.isfinite(d.log_w)]
        elbos.append(float(lw.mean()) if lw.numel() else -math.inf)
        ses.append(float(lw.std() / math.sqrt(lw.numel())) if lw.numel() > 1 else math.nan)
    kl = [[0.0] * R for _ in range(R)]
    share = [[0.0] * R for _ in range(R)]
    disagreements = []
    for i in range(R):
        for j in range(R):
            if i == j:
                continue
            log_qj = _flow_log_prob(flows[j], draws[i].x).nan_to_num(nan=-math.inf, neginf=-math.inf)
            diff = draws[i].log_q - log_qj
            kl[i][j] = float(diff.mean())
            low = diff > -math.log(threshold)
            share[i][j] = float(low.double().mean())
            if share[i][j] > tolerance:
                where = draws[i].x[low].double().reshape(int(low.sum()), -1).mean(0).tolist()
                disagreements.append({"i": i, "j": j, "share": share[i][j], "where": where})
    finite = [e for e in elbos if math.isfinite(e)]
    spread = max(finite) - min(finite) if finite else math.nan
    best = max(range(R), key=lambda k: elbos[k] if math.isfinite(elbos[k]) else -math.inf)
    finite_ses = [s for s in ses if math.isfinite(s)]
    noise = 3 * math.sqrt(2) * max(finite_ses) if finite_ses else 0.0  # of a difference of two ELBOs
    agree = not disagreements and not (spread > max(elbo_tolerance, noise))
    return RestartAgreement(
        elbos=elbos,
        elbo_ses=ses,
        best=best,
        elbo_spread=spread,
        kl=kl,
        disjoint_share=share,
        disagreements=disagreements,
        agree=agree,
        threshold=threshold,
        tolerance=tolerance,
    )
