"""Soak test: long VI runs on hard targets must finish without NaN, and say how often they rolled back.

Two targets that push a flow's numerics: Neal's funnel in d = 50 (the neck needs scales near
``exp(-v/2)`` with ``v`` down to about -9, and ``exp(-v)`` overflows float32 for ``v < -88``) and
a heavy-tailed product of Student-t marginals (``nu = 1.5``: infinite variance, so a Gaussian base
pushed far into the tails sees huge values). Each is fitted with :func:`flowforge.fit_vi` for
``--steps`` steps (20,000 by default) with the default rollback policy, and the script reports:
whether it finished, the number of rollbacks (and their messages, which name the layer where
the first non-finite value appeared), the number of target values that were NaN or -inf, whether
any weight is non-finite at the end, the final ELBO and ``log Z``.

Not part of ``make test``. Run from the repository root::

    .venv/bin/python bench/soak.py                       # both targets, 20,000 steps each
    .venv/bin/python bench/soak.py --steps 2000 --json runs/soak.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from torch import Tensor

import flowforge as ff
from flowforge.targets import Funnel, from_callable
from flowforge.train import TrainingDivergedError
from flowforge.train.runs import default_spec


def student_t(dim: int, nu: float) -> ff.targets.Target:
    """Independent Student-t marginals with ``nu`` degrees of freedom (normalised: log Z = 0)."""
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)  # per coordinate

    def log_density(z: Tensor) -> Tensor:
        return (log_c - 0.5 * (nu + 1) * torch.log1p(z * z / nu)).sum(-1)

    return from_callable(log_density, dim, name=f"student-t(nu={nu})", log_z=0.0)


TARGETS = {
    "funnel-50": lambda: Funnel(50),
    "student-t-10": lambda: student_t(10, 1.5),
}


def soak(name: str, *, steps: int, samples: int, lr: float, max_rollbacks: int, seed: int) -> dict:
    target = TARGETS[name]()
    torch.manual_seed(seed)
    flow = ff.build(default_spec(target.dim))
    t0 = time.perf_counter()
    finished, error = True, None
    try:
        history = ff.fit_vi(
            flow,
            target.log_density,
            steps=steps,
            samples=samples,
            lr=lr,
            seed=seed,
            progress=False,
            max_rollbacks=max_rollbacks,
        )
    except TrainingDivergedError as e:
        finished, error, history = False, str(e), None
    seconds = time.perf_counter() - t0
    weights_finite = all(bool(torch.isfinite(p).all()) for p in flow.parameters())
    out = {
        "target": name,
        "dim": target.dim,
        "steps": steps,
        "samples": samples,
        "lr": lr,
        "seed": seed,
        "finished": finished,
        "error": error,
        "seconds": round(seconds, 1),
        "weights_finite": weights_finite,
        "log_z": target.log_z,
    }
    if history is not None:
        s = history.summary
        rollbacks = [e for e in history.events if e["kind"] == "rollback"]
        finite_losses = sum(math.isfinite(v) for v in history["loss"])
        out.update(
            rollbacks=s["rollbacks"],
            rollback_messages=[f"step {e['step']}: {e['message']}" for e in rollbacks],
            nonfinite_target_values=s["nonfinite_total"],
            nonfinite_fraction=s["nonfinite_fraction"],
            steps_with_finite_loss=finite_losses,
            final_elbo=s["final_elbo"],
            final_elbo_se=s["final_elbo_se"],
            steps_per_second=s["steps_per_second"],
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-rollbacks", type=int, default=5, help="fit_vi's default is 5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.targets:
        r = soak(
            name,
            steps=args.steps,
            samples=args.samples,
            lr=args.lr,
            max_rollbacks=args.max_rollbacks,
            seed=args.seed,
        )
        results.append(r)
        print(json.dumps(r, indent=1), flush=True)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            meta = {"torch": torch.__version__, "flowforge": ff.__version__, "machine": platform.machine()}
            args.json.write_text(json.dumps({"meta": meta, "threads": args.threads, "results": results}))
    print(
        "\n| target | dim | steps | finished | rollbacks | NaN/-inf target values | final ELBO | log Z | s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        elbo, se = r.get("final_elbo"), r.get("final_elbo_se") or 0.0
        print(
            f"| {r['target']} | {r['dim']} | {r['steps']} | {r['finished'] and r['weights_finite']} | "
            f"{r.get('rollbacks', 'n/a')} | {r.get('nonfinite_target_values', 'n/a')} | "
            f"{'n/a' if elbo is None else f'{elbo:.3f} ± {se:.3f}'} | {r['log_z']} | "
            f"{r['seconds']} |"
        )


if __name__ == "__main__":
    main()
