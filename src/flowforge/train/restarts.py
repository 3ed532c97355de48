"""Multi-start variational inference: R fits from different seeds, cross-evaluated, the best kept.

Reverse-KL fits seek modes: two seeds can settle on different modes with equal ELBOs, and no
single fit's ELBO or PSIS k-hat reveals it. ``fit_vi(..., restarts=R)`` runs R fits and compares
them with :func:`~flowforge.diagnostics.restart_agreement` (samples of fit ``i`` under the
density of fit ``j``), so that disagreeing restarts are flagged with the regions where they
differ. The fits run one after another: each is a full ``fit_vi`` run with its own seed,
checkpoints and rollbacks, which batching the restarts on one tensor dimension would give up.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import SpecError
from ..flow import Flow
from .history import History

__all__ = ["fit_vi_restarts", "fresh_copy"]

log = logging.getLogger("flowforge")


def fresh_copy(flow: Flow, *, seed: int) -> Flow:
    """A new flow of the same architecture as ``flow``, freshly initialised from ``seed``.

    The copy is rebuilt from the flow's spec (the way :func:`flowforge.build` does) under
    ``torch.manual_seed(seed)``, so that it starts where a new model would; a flow without a spec
    (hand-made layers) is deep-copied and its submodules' ``reset_parameters`` are called.
    The global RNG state is left as it was.

    Raises:
        ValueError: the flow has no spec and no submodule with ``reset_parameters``: restarts
            would all start from the same point.

    Examples:
        >>> import flowforge as ff
        >>> flow = ff.models.PlanarFlow(2, layers=2)
        >>> other = fresh_copy(flow, seed=1)
        >>> any(not torch.equal(a, b) for a, b in zip(flow.parameters(), other.parameters()))
        True
    """
    from ..registry import build_flow, check_flow_spec, flow_spec

    try:
        spec = flow_spec(flow)
        check_flow_spec(spec)  # a user's own layer is not in the registry: no rebuild from spec
    except (SpecError, TypeError, ValueError):
        spec = None
    p = next(flow.parameters(), None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec is not None:
            new = build_flow(spec)
        else:
            new = copy.deepcopy(flow)
            resettable = [m for m in new.modules() if callable(getattr(m, "reset_parameters", None))]
            if not resettable:
                raise ValueError(
                    "restarts need a flow that can be re-initialised: build it from flowforge layers "
                    "(so that it has a spec) or give its modules a reset_parameters() method"
                )
            for m in resettable:
                m.reset_parameters()
    if p is not None:
        new.to(device=p.device, dtype=p.dtype)
    return new


def fit_vi_restarts(
    flow: Flow,
    log_density: Callable[[Tensor], Tensor],
    fit_one: Callable[..., History],
    *,
    restarts: int,
    seed: int | None,
    checkpoint_dir: str | Path | None,
    agreement_samples: int = 2000,
    **options: Any,
) -> History:
    """Run ``fit_one`` (``fit_vi``) ``restarts`` times and keep the best fit in ``flow``.

    Restart 0 trains ``flow`` itself; restart ``r > 0`` trains :func:`fresh_copy` of it with seed
    ``seed + r`` (its own checkpoint folder ``restart-r`` under ``checkpoint_dir``). The fits are
    then cross-evaluated; the one with the highest ELBO is loaded into ``flow``.

    Returns:
        The best restart's history, with ``summary["restarts"]`` (the number of fits),
        ``summary["restart_best"]``, ``summary["restart_elbos"]`` and
        ``summary["restart_agreement"]`` (:class:`~flowforge.diagnostics.RestartAgreement` as a
        dict), and the attribute ``restart_flows``: all fitted flows, in restart order (the best
        one's weights are also in ``flow``; entry 0 is ``flow`` itself only when it is the best).
    """
    from ..diagnostics import restart_agreement

    if restarts < 2:
        raise ValueError(f"fit_vi_restarts needs restarts >= 2; got {restarts}")
    base_seed = 0 if seed is None else seed
    flows = [flow] + [fresh_copy(flow, seed=base_seed + 7919 * r) for r in range(1, restarts)]
    histories = []
    for r, f in enumerate(flows):
        where = None if checkpoint_dir is None else Path(checkpoint_dir) / f"restart-{r}"
        log.info("vi restart %d of %d (seed %s)", r + 1, restarts, None if seed is None else seed + r)
        histories.append(
            fit_one(f, log_density, seed=None if seed is None else seed + r, checkpoint_dir=where, **options)
        )
    agreement = restart_agreement(flows, log_density, samples=agreement_samples, seed=base_seed)
    best = agreement.best
    if best != 0:
        flows[0] = copy.deepcopy(flow)  # restart 0's own fit, before flow takes the best weights
        with torch.no_grad():
            flow.load_state_dict(flows[best].state_dict())
    history = histories[best]
    history.summary.update(
        restarts=restarts,
        restart_best=best,
        restart_elbos=agreement.elbos,
        restart_agreement=agreement.as_dict(),
    )
    history.events.append({"step": len(history), "kind": "restarts", "message": str(agreement)})
    if not agreement.agree:
        log.warning("restarts disagree: %s", agreement)
    history.restart_flows = flows
    return history
