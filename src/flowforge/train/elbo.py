"""The loss of variational inference: a checked call of the target and the negative ELBO of one step.

:func:`call_target` calls the user's log-density and checks what comes back; :func:`vi_loss`
is the loss of one step and its statistics. Both are separate from the loop
(:func:`~flowforge.train.fit_vi`) so that a data-parallel driver can split the Monte Carlo
samples across processes, and the diagnostics reuse :func:`call_target`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import FlowforgeError, ShapeError
from ..flow import Flow

__all__ = ["TargetError", "call_target", "vi_loss"]

log = logging.getLogger("flowforge.train")


class TargetError(FlowforgeError, RuntimeError):
    """The target log-density raised or returned something that is not a tensor of log-densities."""


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def call_target(log_density: Callable[[Tensor], Tensor], x: Tensor, event_dim: int) -> Tensor:
    """``log_density`` at the points ``x`` (shape ``(*batch, *event)``), checked; returns the batch shape.

    The target is called once on all points flattened to ``(n, *event)`` and must return a
    tensor of shape ``(n,)``; NaN and -inf are allowed (they mean zero density), and so is +inf (a
    singularity or an overflow), which the engine excludes and counts like NaN. A result that does
    not depend on ``x`` through autograd (computed in numpy, or detached) gets a warning: the fit
    would then see the flow's entropy only.

    Raises:
        TargetError: the target raised, or returned something other than a floating tensor.
        ShapeError: the result does not have shape ``(n,)``.
    """
    batch = x.shape[: x.dim() - event_dim]
    flat = x.reshape(-1, *x.shape[x.dim() - event_dim :])
    n = flat.shape[0]
    try:
        out = log_density(flat)
    except FlowforgeError:
        raise
    except Exception as e:
        raise TargetError(
            f"the target {_name(log_density)} raised {type(e).__name__}: {e} "
            f"(called on {n} points of shape {tuple(flat.shape[1:])})"
        ) from e
    if not isinstance(out, Tensor):
        raise TargetError(
            f"the target {_name(log_density)} returned a {type(out).__name__}; it must return a torch.Tensor "
            "computed with torch operations, so that gradients reach the flow"
        )
    if tuple(out.shape) != (n,):
        hint = " (drop the trailing dimension)" if tuple(out.shape) == (n, 1) else ""
        raise ShapeError(
            f"the target {_name(log_density)} returned shape {tuple(out.shape)} for {n} points of shape "
            f"{tuple(flat.shape[1:])}; expected ({n},): one log-density per point{hint}"
        )
    if not out.is_floating_point():
        raise TargetError(
            f"the target {_name(log_density)} returned a tensor of dtype {out.dtype}; log-densities must "
            "be a floating tensor (complex, integer and boolean values are refused rather than cast)"
        )
    if flat.requires_grad and not out.requires_grad:
        warnings.warn(
            f"the target {_name(log_density)} returned values that do not depend on the samples through "
            "autograd (computed outside torch, or detached): the fit only sees the flow's entropy",
            stacklevel=3,
        )
    return out.to(x.dtype).reshape(batch)


def vi_loss(
    flow: Flow,
    log_density: Callable[[Tensor], Tensor],
    *,
    samples: int,
    iw: int | None = None,
    beta: float = 1.0,
    zero_density_penalty: float = 10.0,
    draw: Callable[[tuple[int, ...]], tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, dict]:
    """The loss of one VI step and its statistics.

    Draws ``x ~ q`` with ``log q(x)`` by ``flow.rsample_and_log_prob`` and returns
    ``mean(log q(x) - beta log p(x))`` (or, with ``iw=K``, minus the importance-weighted
    bound ``mean_rows log mean_k exp(beta log p(x_k) - log q(x_k))``). Samples where the
    target is NaN or -inf (zero density) are counted and excluded from those terms; the
    target is then evaluated once more on the finite samples only, so that their gradients
    cannot be polluted by the bad ones. The excluded samples instead add the score-function
    gradient of ``zero_density_penalty * P_q(target undefined)`` (one inverse pass over them),
    which moves q's mass out of the undefined region.

    ``draw(shape)``, if given, replaces ``flow.rsample_and_log_prob`` (``fit_vi(compile=True)``
    passes the flow's generative pass compiled).

    Returns:
        ``(loss, stats)`` with ``stats``: ``elbo`` and ``elbo_se`` (plain ELBO with beta = 1 and its
        Monte Carlo standard error, over the finite samples), ``nonfinite`` (count), ``iw_bound``
        (with ``iw``).
    """
    shape = (samples,) if iw is None else (samples, iw)
    x, log_q = (draw or flow.rsample_and_log_prob)(shape)
    event_dim = len(flow.event_shape)
    log_p = call_target(log_density, x, event_dim)
    ok = torch.isfinite(log_p.detach())
    bad = int((~ok).sum())
    if bad:
        lp_ok = call_target(log_density, x[ok], event_dim) if bool(ok.any()) else log_q.new_zeros(0)
        again = ~torch.isfinite(lp_ok.detach())
        if bool(again.any()):
            raise TargetError(
                f"the target {_name(log_density)} gave different results for the same points "
                "(finite, then not); it must be a deterministic function"
            )
    else:
        lp_ok = log_p.reshape(-1)
    lq_ok = log_q[ok] if bad else log_q.reshape(-1)
    w = (lp_ok - lq_ok).detach().double()
    stats = {
        "nonfinite": bad,
        "elbo": float(w.mean()) if w.numel() else math.nan,
        "elbo_se": float(w.std() / math.sqrt(w.numel())) if w.numel() > 1 else math.nan,
    }
    penalty: Tensor | float = 0.0
    if bad and zero_density_penalty:
        penalty = _score_penalty(flow, x.detach()[~ok], ok.numel(), zero_density_penalty)
    if iw is None:
        loss = (lq_ok - beta * lp_ok).mean() + penalty
    else:
        log_w = torch.full_like(log_q, -math.inf).masked_scatter(ok, beta * lp_ok - lq_ok)
        rows = torch.logsumexp(log_w, -1) - math.log(iw)
        good = torch.isfinite(rows.detach())
        loss = -rows[good].mean() + penalty
        # The bound reported is the one of the true target (beta = 1), like the ELBO.
        log_w1 = torch.full_like(log_q, -math.inf).masked_scatter(ok, (lp_ok - lq_ok).detach())
        bound = (torch.logsumexp(log_w1.double(), -1) - math.log(iw))[good]
        stats["iw_bound"] = float(bound.mean()) if bound.numel() else math.nan
    return loss, stats


def _score_penalty(flow: Flow, x_bad: Tensor, n: int, weight: float) -> Tensor | float:
    # Excluded samples carry no pathwise gradient, and without a counterweight q drifts into
    # the undefined region (the mean over the remaining samples rewards it). The score-function
    # gradient of weight * P_q(undefined), (weight / n) sum_bad grad log q(x_bad) with x_bad held
    # fixed, pushes q's mass out instead; its value is zero so the loss value is unchanged.
    x_bad = x_bad[torch.isfinite(x_bad.reshape(x_bad.shape[0], -1)).all(-1)]
    if not x_bad.shape[0]:
        return 0.0
    try:
        log_q = flow.log_prob(x_bad)
    except FlowforgeError as e:
        log.info("no zero-density penalty this step: the flow's inverse failed (%s)", e)
        return 0.0
    log_q = log_q[torch.isfinite(log_q.detach())]
    return weight * (log_q - log_q.detach()).sum() / n
