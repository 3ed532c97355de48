"""All the diagnostics of a VI fit in one call, as a JSON-ready dict (what ``flowforge vi`` writes)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..flow import Flow
from .defensive import defensive_is
from .elbo import draw, elbo, in_dtype, seeded
from .importance import log_z as is_log_z
from .importance import reweighted_moments
from .jacobian import jacobian_report
from .multistart import restart_agreement
from .psis import psis
from .reference import forward_fit, moment_errors, wasserstein2
from .verdict import verdict

__all__ = ["diagnose"]


def _floats(t: Tensor) -> list:
    return [float(v) for v in t.reshape(-1)]


def diagnose(
    flow: Flow,
    target: Callable[[Tensor], Tensor],
    *,
    samples: int = 4096,
    defensive_samples: int | None = 20_000,
    reference: Tensor | None = None,
    restarts: Sequence[Flow] | None = None,
    jacobian_points: int = 0,
    w2_points: int = 1000,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
) -> dict[str, Any]:
    """Every diagnostic that applies to ``flow`` fitted to ``target``, with the verdict.

    Always: the ELBO with its standard error (and ``KL(q || p) = log Z - ELBO`` where ``log Z`` is
    known), PSIS k-hat and importance ESS, the importance-sampling ``log Z``, reweighted posterior
    means and sds. With ``defensive_samples``: the estimated missing mass. With reference draws
    (``reference``, or the target's ``reference_draws()``): moment errors (plain and reweighted),
    W2 with its noise floor, EUBO, forward KL and the share of reference draws in low-``q``
    regions. With ``restarts`` (other fits of the same target): their agreement. With
    ``jacobian_points``: conditioning, round trip and log-det at that many base draws.

    Args:
        flow: the fitted flow.
        target: a :class:`~flowforge.targets.Target` (or a function; then no ``log_z`` or draws).
        samples: draws from the flow for the ELBO, PSIS and reweighting.
        defensive_samples: draws for defensive IS, or ``None`` to skip it.
        reference: reference posterior draws ``(m, d)`` overriding the target's own.
        restarts: further fits to cross-evaluate against ``flow``.
        jacobian_points: base draws for the Jacobian report (0 to skip; slow for large ``d``).
        w2_points: subsample size for W2.
        seed: seed of every random draw here.
        dtype: run every diagnostic on a copy of the flow in this dtype (default float64: float32
            rounding inflates k-hat; see :func:`~flowforge.diagnostics.in_dtype`).

    Returns:
        A dict of floats and lists (see the keys), with ``verdict`` (one line), ``status`` and
        ``warnings``.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import targets, transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.Diagonal(2)])
        >>> out = diagnose(flow, targets.GaussianMixture(components=1, radius=0.0, scale=1.0))
        >>> out["status"], out["khat"], round(out["kl"], 6)  # q equals p exactly
        ('covers', -inf, 0.0)
    """
    flow = in_dtype(flow, dtype)
    restarts = [in_dtype(f, dtype) for f in restarts] if restarts else restarts
    out: dict[str, Any] = {"target": getattr(target, "name", getattr(target, "__name__", "target"))}
    names = getattr(target, "names", None)
    draws = draw(flow, target, samples, seed=seed)
    est = elbo(draws, target)
    out.update(elbo=est.elbo, elbo_se=est.se, log_z=est.log_z, kl=est.gap, nonfinite=draws.nonfinite)
    ps = psis(draws.log_w)
    out.update(khat=ps.khat, ess=ps.ess, ess_fraction=ps.ess_fraction, samples=draws.n)
    z = is_log_z(draws.log_w)
    out.update(is_log_z=z.log_z, is_log_z_se=z.se)
    x = draws.x.double().reshape(draws.n, -1)
    mean, sd = reweighted_moments(x, draws.log_w)
    out.update(names=names, mean=_floats(x.mean(0)), sd=_floats(x.std(0)))
    out.update(reweighted_mean=_floats(mean), reweighted_sd=_floats(sd))

    if reference is None and hasattr(target, "reference_draws"):
        reference = target.reference_draws()
    forward = None
    if reference is not None:
        reference = torch.as_tensor(reference, dtype=torch.float64)
        err, ratio = moment_errors(x, reference)
        rw_err, rw_ratio = moment_errors(x, reference, weights=torch.softmax(ps.log_weights, 0))
        half = reference.shape[0] // 2
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(reference.shape[0], generator=g)
        forward = forward_fit(flow, target, reference, log_z=est.log_z if est.log_z is not None else z.log_z)
        out["reference"] = {
            "draws": int(reference.shape[0]),
            "mean_error": _floats(err),
            "sd_ratio": _floats(ratio),
            "reweighted_mean_error": _floats(rw_err),
            "reweighted_sd_ratio": _floats(rw_ratio),
            "w2": wasserstein2(x, reference, max_points=w2_points, seed=seed),
            "w2_floor": wasserstein2(
                reference[perm[:half]], reference[perm[half:]], max_points=w2_points, seed=seed
            ),
            "eubo": forward.eubo,
            "eubo_se": forward.eubo_se,
            "forward_kl": forward.forward_kl,
            "low_q_share": forward.low_q_share,
            "log_q_failures": forward.failed,
        }
    defensive = None
    if defensive_samples:
        defensive = defensive_is(flow, target, samples=defensive_samples, seed=seed)
        out["defensive"] = defensive.as_dict()
    agreement = None
    if restarts:
        agreement = restart_agreement([flow, *restarts], target, seed=seed)
        out["restarts"] = agreement.as_dict()
    if jacobian_points:
        with seeded(seed), torch.no_grad():
            zb = flow.base.sample((jacobian_points,))
        out["jacobian"] = jacobian_report(flow, zb).as_dict()
    v = verdict(
        defensive=defensive, forward=forward, restarts=agreement, khat=ps.khat, ess_fraction=ps.ess_fraction
    )
    out.update(verdict=v.line, status=v.status, warnings=v.warnings)
    if est.log_z is not None and est.elbo > est.log_z + 4 * est.se + 1e-6 and math.isfinite(est.se):
        out["warnings"].append(
            f"ELBO {est.elbo:.4f} exceeds the exact log Z {est.log_z:.4f} by more than 4 standard errors: "
            "the target's constant, the flow's log-det or the sampler is wrong"
        )
    return out
