"""Variational inference with flows: :func:`fit_vi` (reverse KL, the negative ELBO).

The loop only; the loss of a step and the checked call of the target are in
:mod:`flowforge.train.elbo`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..flow import Flow
from .compiled import compiled_loss
from .distributed import reduce_vi_stats, replicate, resolve_device, setup
from .elbo import _name, vi_loss
from .engine import Run
from .history import History
from .schedule import resolve_placement

__all__ = ["fit_vi"]

log = logging.getLogger("flowforge.train")


def _beta(anneal: tuple[float, int] | None, step: int) -> float:
    if anneal is None:
        return 1.0
    beta0, n = anneal
    return min(1.0, beta0 + (1.0 - beta0) * step / n)


def fit_vi(
    flow: Flow,
    log_density: Callable[[Tensor], Tensor],
    *,
    steps: int = 2000,
    samples: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup: int = 0,
    anneal: tuple[float, int] | None = None,
    iw: int | None = None,
    zero_density_penalty: float = 10.0,
    clip: float | None = 10.0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = 200,
    resume: bool = False,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    max_rollbacks: int = 5,
    compile: bool = False,
    restarts: int = 1,
) -> History:
    """Fit ``flow`` to an unnormalized density by minimising the reverse KL (maximising the ELBO).

    With ``q`` the flow and ``p~`` the target, each step draws ``samples`` reparameterised
    ``x ~ q`` and minimises ``E_q[log q(x) - beta log p~(x)]``, whose value at ``beta = 1`` is
    ``KL(q || p) - log Z``; the ELBO is its negative. ``anneal=(beta0, n)`` raises ``beta``
    linearly from ``beta0`` to 1 over ``n`` steps (Rezende & Mohamed 2015). ``iw=K`` draws
    ``K`` samples per row and maximises the importance-weighted bound (Burda et al. 2016)
    instead, a tighter bound that favours mass-covering fits.

    Samples at which the target returns NaN or -inf are treated as zero density, never as
    NaN: they are counted per step in ``history["nonfinite"]`` and in total in the summary,
    excluded from the ELBO terms, and push ``q`` away through the score-function gradient of
    ``zero_density_penalty * P_q(target undefined)`` (one inverse pass over those samples).
    Plain exclusion (``zero_density_penalty=0``) lets ``q`` drift into the undefined region,
    because dropping samples there lowers the loss; on a banana target cut to a half-plane,
    87% of the samples ended there after 300 steps, against 0.6% with the default penalty.
    A step where all samples are excluded counts as non-finite (a rollback).

    Rollbacks, checkpoints, resume, progress and Ctrl-C behave as in :func:`~flowforge.fit`.

    Under ``torchrun`` the ``samples`` of a step are split evenly across the processes (it must be
    divisible by their number), each process drawing its share from its own random stream (rank
    ``r`` seeds ``seed + 1000003 r``); DistributedDataParallel averages the gradients and the
    ELBO, its standard error and the non-finite counts are reduced over all ranks.

    Args:
        flow: the flow ``q`` (its ``rsample_and_log_prob`` runs the generative direction only).
        log_density: ``p~``: takes ``(n, *event)`` points and returns ``(n,)`` log-densities,
            computed with torch so that gradients flow.
        steps: optimisation steps.
        samples: Monte Carlo samples per step (rows, with ``iw``).
        lr: peak learning rate of Adam.
        weight_decay: Adam's L2 penalty.
        schedule: ``"cosine"``, ``"linear"`` or ``"constant"``.
        warmup: steps of linear rise of the learning rate.
        anneal: ``(beta0, n)`` or ``None``.
        iw: importance samples per row, or ``None`` for the plain ELBO.
        zero_density_penalty: weight (nats per unit of probability mass) of the push away from
            samples where the target is NaN or -inf; 0 to only exclude them.
        clip: maximum gradient norm, or ``None``.
        progress: as in :func:`~flowforge.fit`.
        checkpoint_dir: as in :func:`~flowforge.fit`.
        checkpoint_every: as in :func:`~flowforge.fit`.
        resume: as in :func:`~flowforge.fit`.
        seed: as in :func:`~flowforge.fit`.
        device: as in :func:`~flowforge.fit`.
        dtype: as in :func:`~flowforge.fit`.
        max_rollbacks: as in :func:`~flowforge.fit`.
        compile: run the flow's generative pass through ``torch.compile`` (as in
            :func:`~flowforge.fit`: first step eager, fallback to eager on a compiler failure,
            ``history.summary["compiled"]``). The base draws, the target and the ELBO's handling
            of non-finite target values stay eager: they are the user's code and data-dependent.
        restarts: ``R > 1`` runs ``R`` fits from seeds ``seed, seed + 1, ...`` (restart ``r``
            starts from a fresh initialisation and checkpoints in ``checkpoint_dir/restart-r``),
            cross-evaluates them (:func:`~flowforge.diagnostics.restart_agreement`), warns when
            they disagree, and keeps the best (highest ELBO) in ``flow``; see
            :mod:`flowforge.train.restarts`. Costs ``R`` times one fit.

    Returns:
        The :class:`~flowforge.train.History`: per step ``loss``, ``elbo``, ``elbo_se``, ``beta``,
        ``lr``, ``grad_norm``, ``nonfinite`` (and ``iw_bound``); summary ``final_elbo``,
        ``final_elbo_se``, ``nonfinite_total``, ``rollbacks``. With ``restarts``: the best fit's
        history, with ``summary["restart_agreement"]`` and the fits in ``history.restart_flows``.

    Raises:
        TargetError: the target raised or returned a non-tensor. ShapeError: wrong output shape.
        TrainingDivergedError: more than ``max_rollbacks`` non-finite steps.

    Cost: ``steps`` generative passes and target evaluations of ``samples`` (x ``iw``) points.

    References:
        Rezende & Mohamed. "Variational Inference with Normalizing Flows". ICML 2015.
        Burda, Grosse, Salakhutdinov. "Importance Weighted Autoencoders". ICLR 2016.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.Diagonal(2)])
        >>> target = lambda x: -0.5 * (((x - 3.0) / 0.5) ** 2).sum(-1)
        >>> h = ff.fit_vi(flow, target, steps=300, lr=0.05, progress=False)
        >>> torch.allclose(flow.sample((4000,)).mean(0), torch.tensor([3.0, 3.0]), atol=0.1)
        True
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"fit_vi trains a flowforge.Flow; got {type(flow).__name__}")
    if not callable(log_density):
        raise TypeError(f"log_density must be callable; got {type(log_density).__name__}")
    if flow.context_features is not None:
        raise ValueError("fit_vi fits an unconditional flow; this one takes a context")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be a positive integer; got {restarts!r}")
    if restarts > 1:
        from .restarts import fit_vi_restarts

        options = dict(
            steps=steps, samples=samples, lr=lr, weight_decay=weight_decay, schedule=schedule,
            warmup=warmup, anneal=anneal, iw=iw, zero_density_penalty=zero_density_penalty, clip=clip,
            progress=progress, checkpoint_every=checkpoint_every, resume=resume, device=device,
            dtype=dtype, max_rollbacks=max_rollbacks, compile=compile,
        )  # fmt: skip
        return fit_vi_restarts(
            flow,
            log_density,
            fit_vi,
            restarts=int(restarts),
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            **options,
        )
    if not zero_density_penalty >= 0:
        raise ValueError(f"zero_density_penalty must be >= 0; got {zero_density_penalty}")
    if samples < 1 or (iw is not None and iw < 1):
        raise ValueError(f"samples and iw must be positive; got samples={samples}, iw={iw}")
    if anneal is not None:
        beta0, n_anneal = anneal
        if not (0 < beta0 <= 1) or int(n_anneal) < 1:
            raise ValueError(f"anneal must be (beta0 in (0, 1], steps >= 1); got {anneal!r}")
        anneal = (float(beta0), int(n_anneal))

    device = resolve_device(device)
    world = setup(device)
    if samples % world.size:
        raise ValueError(
            f"samples is per step over all {world.size} processes and must be divisible by their number; "
            f"got {samples}"
        )
    if seed is not None:
        torch.manual_seed(seed)
    if world.rank:  # distinct Monte Carlo draws per rank; rank 0 keeps the single-process stream
        torch.manual_seed((seed if seed is not None else torch.initial_seed()) + 1_000_003 * world.rank)
    device, dtype = resolve_placement(flow, device, dtype)
    flow.to(device=device, dtype=dtype)
    flow.train()
    fingerprint = {
        "target": _name(log_density),
        "steps": int(steps),
        "samples": int(samples),
        "iw": iw,
        "anneal": list(anneal) if anneal else None,
        "zero_density_penalty": float(zero_density_penalty),
        "lr": float(lr),
        "schedule": schedule,
        "seed": seed,
    }
    run = Run(
        kind="vi",
        flow=flow,
        steps=steps,
        lr=lr,
        schedule=schedule,
        warmup=warmup,
        weight_decay=weight_decay,
        clip=clip,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        max_rollbacks=max_rollbacks,
        fingerprint=fingerprint,
        get_extra=dict,
        set_extra=lambda extra: None,
        world=world,
    )
    history: History = run.history
    if run.finished:
        flow.eval()
        return history

    call, local = replicate(flow, world), samples // world.size
    draw, forward = None, None
    if compile:
        forward = compiled_loss(lambda z, c: flow.transform(z, c), device=device, distributed=world.active)

        def draw(shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
            z, log_pz = flow.base.rsample_and_log_prob(shape)  # an unconditional flow: no context
            x, ladj = forward(z, None)
            return x, log_pz - ladj

    with run.running("vi") as bar:
        while run.step < steps:
            beta = _beta(anneal, run.step)
            stats: dict = {}

            def loss_fn(beta: float = beta, stats: dict = stats) -> Tensor:
                loss, s = call(
                    vi_loss,
                    log_density,
                    samples=local,
                    iw=iw,
                    beta=beta,
                    zero_density_penalty=zero_density_penalty,
                    draw=draw,
                )
                stats.update(reduce_vi_stats(world, s, local * (iw or 1)))
                return loss

            def describe(stats: dict = stats) -> str:
                return f"{stats.get('nonfinite', '?')} of the samples had a NaN or infinite target value"

            loss, norm = run.optimize(loss_fn, describe)
            record = {
                "step": run.step + 1,
                "loss": loss,
                "elbo": stats["elbo"],
                "elbo_se": stats["elbo_se"],
                "beta": beta,
                "lr": run.optimizer.param_groups[0]["lr"],
                "grad_norm": math.nan if norm is None else norm,
                "nonfinite": stats["nonfinite"],
            }
            if iw is not None:
                record["iw_bound"] = stats["iw_bound"]
            history.log(**record)
            run.end_step()
            bar.update(run.step, f"ELBO {stats['elbo']:.3f} ± {stats['elbo_se']:.3f}  beta {beta:.2f}")

    tail = [v for v in history["elbo"][-50:] if math.isfinite(v)]
    nonfinite = int(sum(history["nonfinite"]))
    per_step = samples * (iw or 1)
    history.summary.update(
        final_elbo=sum(tail) / len(tail) if tail else None,
        final_elbo_se=(
            math.sqrt(sum((v - sum(tail) / len(tail)) ** 2 for v in tail) / (len(tail) - 1) / len(tail))
            if len(tail) > 1
            else None
        ),
        nonfinite_total=nonfinite,
        nonfinite_fraction=nonfinite / (per_step * max(len(history), 1)),
        samples_per_step=per_step,
    )
    if nonfinite:
        log.warning(
            "the target was NaN or infinite at %d of %d samples (excluded as zero density)",
            nonfinite,
            per_step * len(history),
        )
    if forward is not None:
        history.summary["compiled"] = forward.state == "compiled"
    run.finish()
    flow.eval()
    return history
