"""Maximum-likelihood training: :func:`fit`.

The pieces are separate functions so that a data-parallel driver can reuse them:
:func:`split` (train/validation), :class:`EpochSampler` (which rows form each minibatch),
:func:`nll` (the loss of a batch), :func:`evaluate` (the validation loss), and the step
itself in :class:`~flowforge.train.engine.Run`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..datasets.memmap import MemmapData
from ..flow import Flow
from ..nets.precision import PRECISIONS, conditioner_precision
from .compiled import compiled_loss
from .data import EpochSampler, attach_standardizer, checked_inputs, digest, holdout
from .distributed import World, replicate, resolve_device, setup
from .engine import Run, _clone
from .history import History
from .schedule import resolve_placement

__all__ = ["evaluate", "fit", "nll"]

log = logging.getLogger("flowforge.train")


def nll(flow: Flow, x: Tensor, context: Tensor | None = None) -> Tensor:
    """Mean negative log-likelihood of a batch (the loss of maximum likelihood)."""
    return -flow.log_prob(x, context).mean()


def _in_precision(precision: str | None, fn, *args):
    with conditioner_precision(precision):
        return fn(*args)


@torch.no_grad()
def evaluate(
    flow: Flow,
    data: Tensor | MemmapData,
    context: Tensor | None = None,
    *,
    batch_size: int = 4096,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    world: World | None = None,
) -> float:
    """Mean negative log-likelihood of ``data`` in eval mode, in chunks (``inf`` if a point has density 0).

    With a distributed ``world`` every rank scores its contiguous share of the rows and the sums
    are all-reduced: all ranks must call it, and all get the mean over all rows.
    """
    was_training = flow.training
    flow.eval()
    total, count = 0.0, 0
    rows = world.shard(data.shape[0]) if world is not None else slice(0, data.shape[0])
    try:
        for i in range(rows.start, rows.stop, batch_size):
            j = min(i + batch_size, rows.stop)
            x = data[i:j].to(device=device, dtype=dtype)
            c = None if context is None else context[i:j].to(device=device, dtype=dtype)
            total += float(-flow.log_prob(x, c).double().sum())
            count += x.shape[0]
    finally:
        flow.train(was_training)
    if world is not None and world.active:
        total, count = (float(v) for v in world.sum(torch.tensor([total, count], dtype=torch.float64)))
    return total / count if math.isfinite(total) else math.inf


@torch.no_grad()
def _culprits(flow: Flow, x: Tensor, context: Tensor | None, rows: Tensor) -> str:
    # Only called after a non-finite loss: name the data rows responsible.
    bad = rows[~torch.isfinite(flow.log_prob(x, context)).cpu()]
    if not bad.numel():
        return "every row of the batch has a finite log-density"
    shown = ", ".join(str(int(r)) for r in bad[:8])
    return f"non-finite log-density at data row(s) [{shown}{', ...' if bad.numel() > 8 else ''}]"


@torch.no_grad()
def _initialize_on_global_batch(
    flow: Flow, x: Tensor, c: Tensor | None, sampler: EpochSampler, *, device, dtype
) -> None:
    # Data-dependent initialisations (ActNorm) see the first minibatch; every rank must see the
    # whole global one, as a single process does, or the ranks' weights would start apart.
    if not any(not bool(b) for name, b in flow.named_buffers() if name.endswith("initialized")):
        return
    idx = EpochSampler(sampler.n, sampler.batch_size, seed=0)
    idx.load_state_dict(sampler.state_dict())
    rows = idx.next()
    flow.log_prob(
        x[rows].to(device=device, dtype=dtype), None if c is None else c[rows].to(device=device, dtype=dtype)
    )


def fit(
    flow: Flow,
    data: Tensor | np.ndarray | MemmapData,
    *,
    context: Tensor | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup: int = 0,
    val_fraction: float = 0.1,
    val_data: Tensor | np.ndarray | MemmapData | None = None,
    val_context: Tensor | None = None,
    eval_every: int | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    clip: float | None = 10.0,
    standardize: bool = True,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = 200,
    resume: bool = False,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    max_rollbacks: int = 5,
    compile: bool = False,
    mixed_precision: str | None = None,
) -> History:
    """Fit ``flow`` to ``data`` by maximum likelihood (minibatch Adam); the flow is changed in place.

    Minimises ``-mean log p(x)`` over minibatches. The learning rate follows ``schedule``;
    gradients are clipped to norm ``clip``. A random ``val_fraction`` of the rows (or
    ``val_data``) is held out and evaluated every ``eval_every`` steps; with ``patience``
    training stops after that many evaluations without improvement, and with
    ``restore_best`` the weights of the best evaluation are restored at the end.

    With ``standardize`` a :class:`~flowforge.transforms.Standardize` fitted on the
    training rows is appended at the data end of the flow (unless the flow already ends in
    one), so the other layers see standardized data while ``flow.log_prob(x)`` stays in
    raw units with the Jacobian included: ``log p(x) = log p_std((x - m) / s) - sum log s``.
    Constant features keep scale 1 (no division by zero) and are reported.

    A non-finite loss or gradient does not update the weights: they roll back to the last
    good state (refreshed every 50 steps), the learning rate halves, and a warning says
    so; after ``max_rollbacks`` rollbacks a :class:`~flowforge.train.TrainingDivergedError`
    stops the run. With ``checkpoint_dir`` a checkpoint is written atomically every
    ``checkpoint_every`` steps and at the end (model, optimizer, schedule, RNG states,
    sampler, history, best weights); ``resume=True`` continues from it exactly, so a CPU run
    killed and resumed ends with the same weights as an uninterrupted one. Ctrl-C finishes the
    current step, writes a checkpoint and raises ``KeyboardInterrupt``.

    Under ``torchrun`` (see :mod:`flowforge.train.distributed`) the same call trains data-parallel:
    ``batch_size`` stays the global batch, every rank draws the same global minibatch and takes its
    contiguous share of ``batch_size / world_size`` rows (``batch_size`` must be divisible by the
    number of processes), DistributedDataParallel averages the gradients, so the steps, and ``lr``,
    mean what they mean in one process. Validation is split across ranks and reduced; only rank 0
    writes checkpoints; ``resume=True`` works the same.

    Args:
        flow: the flow to train (moved to ``device``/``dtype``).
        data: training rows, shape ``(n, *event)``, finite.
        context: per-row context for conditional flows, shape ``(n, c)``.
        steps: number of optimisation steps (default 1000); or give ``epochs`` instead.
        epochs: passes over the training rows (``ceil(n_train / batch_size)`` steps each).
        batch_size: rows per step.
        lr: peak learning rate of Adam.
        weight_decay: Adam's L2 penalty.
        schedule: ``"cosine"``, ``"linear"`` or ``"constant"``; ``warmup`` steps of linear rise.
        val_fraction: share of rows held out for validation (0 for none).
        val_data: explicit validation rows instead of ``val_fraction``.
        val_context: the context of ``val_data`` (conditional flows).
        eval_every: steps between validations (default: 40 evaluations per run).
        patience: evaluations without improvement before stopping (``None``: never stop early).
        restore_best: end with the weights of the best validation loss.
        clip: maximum gradient norm (``None``: no clipping).
        standardize: append a fitted standardizer (see above).
        progress: show a progress bar (loss, validation, steps/s).
        checkpoint_dir: where checkpoints go (``None``: none are written; see above).
        checkpoint_every: steps between checkpoints.
        resume: continue from the checkpoint in ``checkpoint_dir`` (see above).
        seed: seeds torch's global generator and the data split and batches (``None``: no seeding).
        device: where to train (default: the flow's device).
        dtype: the precision to train in (default: the flow's).
        max_rollbacks: rollbacks allowed before giving up.
        compile: run the training loss through ``torch.compile`` (CUDA: ``mode="reduce-overhead"``,
            CUDA graphs); the first step runs eagerly, the next one compiles (seconds to minutes),
            and a compiler failure falls back to eager with a warning
            (:func:`flowforge.train.compiled.compiled_loss`). Results equal eager ones to float
            rounding; ``history.summary["compiled"]`` says whether the compiled step ran.
        mixed_precision: ``"bf16"`` runs the conditioner networks' matrix products in bfloat16 during
            training steps, while transformers, log-determinants and their sums stay in ``dtype``
            (:func:`flowforge.nets.precision.conditioner_precision`); validation is in ``dtype``.

    Returns:
        The :class:`~flowforge.train.History` (per-step ``loss``, ``lr``, ``grad_norm``;
        evaluations ``val_loss``; events; summary with ``best_val_loss``, ``stopped_early``, ...).

    Raises:
        ShapeError: data or context of the wrong shape (both shapes named).
        DataError: non-finite or non-numeric data, too few rows.
        TrainingDivergedError: more than ``max_rollbacks`` non-finite steps.
        CheckpointError: ``resume=True`` with a checkpoint of another run.

    Cost: ``steps`` forward and backward passes through the inverse direction of the flow.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> from flowforge.datasets import generate
        >>> _ = torch.manual_seed(0)
        >>> layers = [T.LULinear(2), T.RationalQuadraticSpline(2)]
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), layers)
        >>> history = ff.fit(flow, generate("moons", 1000), steps=100, lr=1e-2, progress=False)
        >>> history["val_loss"][-1] < history["val_loss"][0] - 0.2
        True
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"fit trains a flowforge.Flow; got {type(flow).__name__}")
    if steps is not None and epochs is not None:
        raise ValueError("give steps= or epochs=, not both")
    if mixed_precision is not None and mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be 'bf16' or None; got {mixed_precision!r}")
    if not batch_size >= 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    data, context = checked_inputs(flow, data, context)
    lazy = isinstance(data, MemmapData)

    device = resolve_device(device)
    world = setup(device)
    if seed is not None:
        torch.manual_seed(seed)
    base_seed = int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item())
    if world.active:
        base_seed = world.all_gather(base_seed)[0]  # one split and one batch order for all ranks
    history_placeholder = History("ml")
    train_idx, train_x, train_c, val_x, val_c = holdout(
        flow, data, context, val_data, val_context, val_fraction, seed=base_seed
    )
    n_train = train_x.shape[0]
    for part in (train_x, val_x):
        if isinstance(part, MemmapData):
            part.scan(world=world)  # the one streaming pass: finiteness, digest, moments (cached)

    if standardize:
        attach_standardizer(flow, train_x, history_placeholder)
    device, dtype = resolve_placement(flow, device, dtype)
    flow.to(device=device, dtype=dtype)
    flow.train()

    per_epoch = math.ceil(n_train / min(batch_size, n_train))
    total = int(steps) if steps is not None else (int(epochs) * per_epoch if epochs is not None else 1000)
    if eval_every is None:
        eval_every = max(1, total // 40)
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be positive or None; got {patience}")
    if patience is not None and val_x is None:
        raise ValueError("patience= needs validation data: set val_fraction > 0 or pass val_data=")
    sampler = EpochSampler(n_train, batch_size, seed=base_seed + 1)
    if sampler.batch_size % world.size:
        raise ValueError(
            f"batch_size is the global batch and must be divisible by the {world.size} processes; "
            f"got {sampler.batch_size}"
        )
    share = world.shard(sampler.batch_size)

    best: dict = {"loss": math.inf, "step": 0, "state": None, "bad": 0, "stopped": False}

    def get_extra() -> dict:
        return {"sampler": sampler.state_dict(), "best": best}

    def set_extra(extra: dict) -> None:
        sampler.load_state_dict(extra["sampler"])
        best.update(extra["best"])

    fingerprint = {
        "data_sha256": digest(train_x, val_x)
        if lazy
        else digest(data, context, None if val_data is None else val_x),
        "steps": total,
        "batch_size": int(batch_size),
        "lr": float(lr),
        "schedule": schedule,
        "seed": seed,
        "val_fraction": float(val_fraction),
        "standardize": bool(standardize),
        "mixed_precision": mixed_precision,
    }
    run = Run(
        kind="ml",
        flow=flow,
        steps=total,
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
        get_extra=get_extra,
        set_extra=set_extra,
        world=world,
    )
    history = run.history
    if run.step == 0:
        history.events.extend(history_placeholder.events)
    if run.finished:
        flow.eval()
        return history
    call = replicate(flow, world)

    def step_loss(x: Tensor, c: Tensor | None) -> Tensor:
        return _in_precision(mixed_precision, call, nll, x, c)

    if compile:
        step_loss = compiled_loss(step_loss, device=device, distributed=world.active)
    if world.active and run.step == 0:
        _initialize_on_global_batch(flow, train_x, train_c, sampler, device=device, dtype=dtype)

    with run.running("fit") as bar:
        while run.step < total and not best["stopped"]:
            idx = sampler.next()[share]
            x = train_x[idx].to(device=device, dtype=dtype)
            c = None if train_c is None else train_c[idx].to(device=device, dtype=dtype)
            loss, norm = run.optimize(
                lambda x=x, c=c: step_loss(x, c),
                lambda x=x, c=c, idx=idx: _culprits(flow, x, c, train_idx[idx]),
            )
            step = run.step + 1
            history.log(
                step=step, loss=loss, lr=run.optimizer.param_groups[0]["lr"], grad_norm=norm or math.nan
            )
            info = f"loss {loss:.4f}"
            if val_x is not None and (step % eval_every == 0 or step == total):
                v = evaluate(flow, val_x, val_c, device=device, dtype=dtype, world=world)
                history.log_eval(step=step, val_loss=v)
                if v < best["loss"]:
                    best.update(loss=v, step=step, state=_clone(flow.state_dict()), bad=0)
                else:
                    best["bad"] += 1
                    if patience is not None and best["bad"] >= patience:
                        best["stopped"] = True
                        history.event(
                            step, "early_stop", f"no validation improvement in {patience} evaluations"
                        )
            if history.evals:
                info += f"  val {history.evals['val_loss'][-1]:.4f}"
            run.end_step()
            bar.update(run.step, info)

    if restore_best and best["state"] is not None:
        flow.load_state_dict(best["state"])
        history.event(run.step, "restored_best", f"restored the weights of step {best['step']}")
    losses = [v for v in history["loss"][-20:] if math.isfinite(v)] if len(history) else []
    history.summary.update(
        final_loss=sum(losses) / len(losses) if losses else None,
        best_val_loss=best["loss"] if math.isfinite(best["loss"]) else None,
        best_step=best["step"] if best["state"] is not None else None,
        stopped_early=bool(best["stopped"]),
        n_train=n_train,
        n_val=None if val_x is None else int(val_x.shape[0]),
        batch_size=sampler.batch_size,
    )
    if compile:
        history.summary["compiled"] = step_loss.state == "compiled"
    run.finish()
    flow.eval()
    return history
