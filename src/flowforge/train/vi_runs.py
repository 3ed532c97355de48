"""Run folders of variational fits: what ``flowforge vi`` does, callable from Python too.

A run folder holds ``model/`` (a saved model), ``metrics.json`` (with the diagnostics of
:func:`flowforge.diagnostics.diagnose`), ``history.json``, ``figures/*.png``, ``report.md``,
``report.html`` and ``checkpoints/``; :mod:`flowforge.train.runs` does the same for ``flowforge fit``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import SpecError
from ..flow import Flow
from ..io import save
from .distributed import resolve_device, setup
from .history import _clean
from .report import write_json, write_report
from .runs import resolve_model, thread_limit
from .vi import fit_vi

__all__ = ["resolve_target", "vi_run"]

log = logging.getLogger("flowforge.train")


def resolve_target(spec: str, dim: int | None = None) -> Any:
    """A :class:`flowforge.targets.Target` by registry name, or ``module:function`` (imported on request)."""
    from .. import targets

    try:
        return targets.get(spec, **({"dim": dim} if dim is not None else {}))
    except TypeError as e:
        raise SpecError(f"target {spec!r} cannot be made with these arguments (--dim {dim}): {e}") from None
    except (ValueError, ImportError, AttributeError, FileNotFoundError) as e:
        raise SpecError(str(e)) from None


def _diagnose(flow: Flow, target: Any, seed: int, restarts: list[Flow] | None = None) -> dict:
    from ..diagnostics import diagnose

    try:
        return diagnose(flow, target, seed=seed, restarts=restarts)
    except Exception as e:  # a failing diagnostic must not lose the fitted model
        log.warning("diagnostics failed: %s: %s", type(e).__name__, e)
        return {"error": f"{type(e).__name__}: {e}"}


def vi_run(
    *,
    target: str,
    model: str = "default",
    model_args: dict | None = None,
    dim: int | None = None,
    steps: int = 2000,
    samples: int = 128,
    lr: float = 5e-3,
    iw: int | None = None,
    anneal: tuple[float, int] | None = None,
    out: str | Path = "runs/vi",
    seed: int = 0,
    device: str | None = None,
    resume: bool = False,
    checkpoint_every: int = 500,
    progress: bool = True,
    plots: bool = True,
    threads: int | None = None,
    restarts: int = 1,
    command: str | None = None,
    compile: bool = False,
) -> dict:
    """Fit a model to a target density by reverse KL and write a complete run folder.

    With ``restarts > 1`` the fit is repeated from fresh initialisations (see ``fit_vi``), the best
    one is saved, and the diagnostics cross-evaluate the others against it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    world = setup(device)
    resolved = resolve_target(target, dim)
    torch.manual_seed(seed)
    flow = resolve_model(model, (resolved.dim,), model_args)
    log.info(
        "vi: target %s (dimension %d), model %s, %d steps, out %s", target, resolved.dim, model, steps, out
    )
    with thread_limit(flow, threads) as used_threads:
        history = fit_vi(
            flow,
            resolved.log_density,
            steps=steps,
            samples=samples,
            lr=lr,
            iw=iw,
            anneal=anneal,
            seed=seed,
            device=device,
            progress=progress,
            checkpoint_dir=out / "checkpoints",
            checkpoint_every=checkpoint_every,
            resume=resume,
            restarts=restarts,
            compile=compile,
        )
    s = history.summary
    elbo = s["final_elbo"]
    metrics = {
        "target": target,
        "dim": resolved.dim,
        "model": model,
        "parameters": sum(p.numel() for p in flow.parameters()),
        "steps": s["steps"],
        "samples_per_step": s["samples_per_step"],
        "threads": used_threads,
        "seconds": s["seconds"],
        "steps_per_second": s["steps_per_second"],
        "rollbacks": s["rollbacks"],
        "compiled": s.get("compiled", False),
        "final_elbo": elbo,
        "final_elbo_se": s["final_elbo_se"],
        "final_iw_bound": history["iw_bound"][-1] if iw else None,
        "log_z": resolved.log_z,
        "kl_q_p_estimate": None if resolved.log_z is None or elbo is None else resolved.log_z - elbo,
        "nonfinite_target_values": s["nonfinite_total"],
        "processes": world.size,
    }
    if not world.main:  # rank 0 alone diagnoses and writes the run folder
        return metrics
    best = s.get("restart_best", 0)  # flow holds the best restart's weights; cross-check the others
    others = [f for i, f in enumerate(getattr(history, "restart_flows", [])) if i != best]
    diagnostics = _diagnose(flow, resolved, seed, restarts=others or None)
    metrics.update(
        verdict=diagnostics.get("verdict"),
        psis_khat=diagnostics.get("khat"),
        importance_ess_fraction=diagnostics.get("ess_fraction"),
        missing_mass=(diagnostics.get("defensive") or {}).get("missing_mass"),
        restarts=restarts,
        warnings=diagnostics.get("warnings", []),
        diagnostics=diagnostics,
    )
    headline = _clean({k: v for k, v in metrics.items() if k != "diagnostics"})
    save(flow, out / "model", metadata={"command": command, "metrics": headline})
    write_json(out / "metrics.json", metrics)
    history.save(out / "history.json")
    figures: list[tuple[str, str]] = []
    if plots:
        from .. import plots as P

        P.save_figure(P.elbo_curve(history, log_z=resolved.log_z), out / "figures" / "elbo.png")
        figures.append(("figures/elbo.png", "ELBO per step with two Monte Carlo standard errors."))
        if resolved.dim == 2:
            draws = resolved.reference_draws() if hasattr(resolved, "reference_draws") else None
            density = P.vi_density(flow, resolved.log_density, reference=draws)
            P.save_figure(density, out / "figures" / "density.png")
            figures.append(
                ("figures/density.png", "Target density (left) and the fitted flow's density (right).")
            )
    summary = (
        f"Variational fit of the {model} model to the target {target} (dimension {resolved.dim}) for "
        f"{s['steps']} steps in {s['seconds']:.0f} s: final ELBO {elbo:.4f} ± {s['final_elbo_se'] or 0:.4f}"
        + (f" (log Z = {resolved.log_z:.4f})." if resolved.log_z is not None else ".")
    )
    details = json.dumps(_clean(diagnostics), indent=1, default=lambda v: None)
    write_report(
        out,
        title=f"flowforge vi: {target}",
        summary=summary + (f" Verdict: {metrics['verdict']}." if metrics["verdict"] else ""),
        metrics=headline,
        figures=figures,
        sections=[("Diagnostics (flowforge.diagnostics.diagnose)", details)],
        command=command,
    )
    return metrics
