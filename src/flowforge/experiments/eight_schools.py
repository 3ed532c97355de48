"""Seed 003's study: does a deeper planar flow fit the eight-schools posterior, and which flows do?

Seed 003 fits planar flows of depth 10 to 128 to a two-school reduction of the eight-schools
model and reports PSIS k-hat and the ELBO against depth (5 training runs x 5 sample sets):
k-hat falls with depth up to 80 layers, then plateaus. Here the same sweep runs on the correct
target (the author's counted the priors of mu and tau and the log-tau Jacobian once per school),
on two schools and on all eight, centred and non-centred, with the exact evidence
``log p(y)`` as the ceiling of every ELBO, then the same for other families. Each fit also gets
the coverage diagnostics of issue 13 (defensive importance sampling, reference draws in low-q
regions, the verdict line).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import diagnostics as D
from .. import targets
from ..errors import FlowforgeError
from .common import Report, markdown_table
from .vi_common import Budget, fit_and_diagnose, khat_warning, one_thread, summarize

__all__ = ["CLAIM", "NAME", "PUBLISHED", "SEED", "run"]

NAME = "eight-schools"
SEED = "003_85b262ff283ae215.txt"
CLAIM = (
    "On the eight-schools posterior (its two-school reduction), deeper planar flows fit better up to about "
    "80 layers (k-hat falls from about 0.54 at depth 10 to 0.28 at depth 80), after which the gain becomes "
    "unclear (0.33 at depth 128): depth alone does not make planar flows fit the funnel's neck."
)

# Seed 003's author's numbers (VINF repository), on his target (see the module docstring).
PUBLISHED = {
    ("two-schools-centered", "planar"): {
        10: 0.54,
        20: 0.46,
        30: 0.40,
        40: 0.38,
        60: 0.33,
        80: 0.28,
        128: 0.33,
    },
    ("eight-schools-centered", "planar"): {8: 0.65},
    ("eight-schools-centered", "mean-field"): {1: 0.78},
    ("eight-schools-noncentered", "planar"): {8: 0.23},
    ("eight-schools-noncentered", "mean-field"): {1: 0.11},
}

TARGETS = (
    "two-schools-centered",
    "two-schools-noncentered",
    "eight-schools-centered",
    "eight-schools-noncentered",
)


def _plan(quick: bool) -> list[tuple[str, str, int, int, Budget]]:
    """(target, family, depth, runs, budget) to run.

    The full plan is seed 003's protocol cut to what fits in about half an hour on two CPU
    cores: 2 training runs (not 5) for the depth sweep and the other families, 1 on the
    two-school non-centred model, depths 10, 20, 40, 80, 128 on two schools (30 and 60
    skipped) and 8, 32, 128 on all eight; 5 sample sets per run as in the seed.
    """
    if quick:
        b = Budget(
            steps=150,
            samples=64,
            lr=1e-2,
            sample_sets=2,
            set_size=1000,
            elbo_samples=2000,
            defensive_samples=4000,
        )
        return [
            (t, f, d, 2 if f == "nsf" else 1, b)
            for t in ("two-schools-centered", "eight-schools-noncentered")
            for f, d in (("mean-field", 1), ("planar", 10), ("planar", 30), ("nsf", 2))
        ]
    cheap = Budget(steps=1000, samples=128, lr=5e-3)  # mean-field and planar: many cheap layers
    rich = Budget(steps=3000, samples=256, lr=5e-3)  # IAF, RealNVP, NSF: held to the quality bar
    plan = [("two-schools-centered", "mean-field", 1, 2, cheap)]
    plan += [("two-schools-centered", "planar", d, 2, cheap) for d in (10, 20, 40, 80, 128)]
    plan += [("two-schools-centered", f, 4, 2, rich) for f in ("iaf", "nsf")]
    plan += [
        ("two-schools-noncentered", f, d, 1, cheap)
        for f, d in (("mean-field", 1), ("planar", 10), ("planar", 40))
    ]
    plan += [("two-schools-noncentered", "iaf", 4, 1, rich)]
    for t, deep in (("eight-schools-centered", 8), ("eight-schools-noncentered", 4)):
        plan += [(t, "mean-field", 1, 2, cheap)]
        plan += [(t, "planar", d, 2, cheap) for d in (8, 32, 128)]
        plan += [(t, f, deep, 2, rich) for f in ("iaf", "realnvp", "nsf")]
    return plan


def _published(target: str, family: str, depth: int) -> str:
    v = PUBLISHED.get((target, family), {}).get(depth)
    return "" if v is None else f"{v:.2f}"


def _restarts(group: dict) -> str:
    if "restarts_agree" not in group:
        return ""
    word = "agree" if group["restarts_agree"] else "DISAGREE"
    return f"{word} ({100 * group['restarts_max_disjoint']:.0f}%)"


def _khat_figure(groups: list[dict]) -> Figure:
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    for target in TARGETS:
        g = sorted(
            (x for x in groups if x["target"] == target and x["family"] == "planar"), key=lambda x: x["depth"]
        )
        if not g:
            continue
        d = [x["depth"] for x in g]
        left.errorbar(
            d,
            [x["khat_mean"] for x in g],
            yerr=[x["khat_mean_sd"] for x in g],
            marker="o",
            capsize=3,
            label=target,
        )
        right.errorbar(
            d,
            [max(x["kl"], 1e-4) for x in g],
            yerr=[x["kl_sd"] for x in g],
            marker="o",
            capsize=3,
            label=target,
        )
    pub = PUBLISHED[("two-schools-centered", "planar")]
    left.plot(list(pub), list(pub.values()), "k--", marker="x", label="seed 003 (his target)")
    left.axhline(0.7, color="tab:red", lw=0.8, ls=":")
    left.axhline(0.5, color="tab:orange", lw=0.8, ls=":")
    left.set(
        xscale="log", xlabel="planar layers", ylabel="PSIS k-hat (mean over runs and sets)", title="k-hat"
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="planar layers",
        ylabel="log p(y) - ELBO (nats)",
        title="KL(q || p) = log p(y) - ELBO",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@torch.no_grad()
def _scatter_figure(target_name: str, flows: dict) -> Figure:
    target = targets.get(target_name)
    ref = target.to_original(target.reference_draws())
    fig = Figure(figsize=(4 * (1 + len(flows)), 3.8))
    axes = fig.subplots(1, 1 + len(flows), squeeze=False)[0]
    panels = [("reference (NUTS)", ref)] + [
        (label, target.to_original(flow.sample((4000,)).double())) for label, flow in flows.items()
    ]
    for ax, (label, x) in zip(axes, panels):
        ax.scatter(x[:4000, 0].numpy(), np.log(x[:4000, -1].numpy()), s=2, alpha=0.3)
        ax.set(xlabel="theta_1", ylabel="log tau", title=label, xlim=(-20, 45), ylim=(-6, 4))
    fig.suptitle(target_name)
    fig.tight_layout()
    return fig


def run(*, quick: bool, out: Path, seed: int) -> dict:
    """The depth sweep and the other families; writes results.json, figures and report.md."""
    plan = _plan(quick)
    report = Report(NAME, seed_text=SEED, claim=CLAIM, out=out, quick=quick, seed=seed)
    rows, best_flows, fits = [], {}, {}
    cache = {name: targets.get(name) for name in {p[0] for p in plan}}
    refs = {name: t.reference_draws() for name, t in cache.items()}
    with one_thread():
        for target_name, family, depth, runs, budget in plan:
            target = cache[target_name]
            for r in range(runs):
                try:
                    row, flow = fit_and_diagnose(
                        target, family, depth, budget, seed=seed + 100 * r, reference=refs[target_name]
                    )
                except FlowforgeError as e:  # a diverged fit or a failed inverse: reported, not hidden
                    rows.append(
                        {
                            "target": target_name,
                            "family": family,
                            "depth": depth,
                            "failed": f"{type(e).__name__}: {e}",
                        }
                    )
                    continue
                row["target"] = target_name
                rows.append(row)
                fits.setdefault((target_name, family, depth), []).append(flow)
                key = (target_name, "planar" if family == "planar" else "other")
                if key not in best_flows or row["elbo"] > best_flows[key][0]:
                    best_flows[key] = (row["elbo"], f"{family} {depth}", flow)

        # Issue 13's multi-start check: do the training runs of a configuration agree?
        agreement = {}
        for (target_name, family, depth), flows in fits.items():
            if len(flows) > 1:
                a = D.restart_agreement(flows, cache[target_name], samples=2000, seed=seed)
                agreement[(target_name, family, depth)] = a

    done = [r for r in rows if "failed" not in r]
    groups = summarize(done, keys=("target", "family", "depth"))
    for x in groups:
        a = agreement.get((x["target"], x["family"], x["depth"]))
        if a is not None:
            x["restarts_agree"] = a.agree
            x["restarts_max_disjoint"] = max(max(row) for row in a.disjoint_share)
    log_z = {name: t.log_z for name, t in cache.items()}
    for target_name in [t for t in TARGETS if t in cache]:
        g = [x for x in groups if x["target"] == target_name]
        mu_lt = {}
        for r in done:
            if r["target"] == target_name:
                mu_lt.setdefault((r["family"], r["depth"]), []).append(r["reweighted_mean_error"][-2:])
        table = []
        for x in g:
            errs = np.abs(np.asarray(mu_lt[(x["family"], x["depth"])])).max(0)
            table.append(
                [
                    x["family"],
                    x["depth"],
                    x["runs"],
                    f"{x['elbo']:.3f} ± {x['elbo_sd']:.3f}",
                    f"{x['kl']:.3f}",
                    f"{x['khat_mean']:.2f} ± {x['khat_mean_sd']:.2f}",
                    _published(target_name, x["family"], x["depth"]),
                    f"{x['ess_fraction']:.2f}",
                    f"{100 * x['missing_mass']:.0f}%",
                    f"{100 * x['low_q_share']:.0f}%",
                    f"{x['forward_kl']:.2f}",
                    f"{errs[0]:.2f} / {errs[1]:.2f}",
                    ", ".join(x["statuses"]),
                    _restarts(x),
                    f"{x['fit_seconds']:.0f}",
                ]
            )
        report.section(
            f"{target_name} (log p(y) = {log_z[target_name]:.4f})",
            markdown_table(
                [
                    "family",
                    "depth",
                    "runs",
                    "ELBO (mean ± sd over runs)",
                    "KL",
                    "k-hat",
                    "seed 003",
                    "ESS",
                    "missing (DIS)",
                    "ref. in low q",
                    "forward KL",
                    "|rw. mean err| mu / log tau (ref sd)",
                    "verdicts",
                    "restarts",
                    "fit s",
                ],
                table,
            ),
        )
    failed = [f"{r['target']} {r['family']} {r['depth']}: {r['failed']}" for r in rows if "failed" in r]
    if failed:
        report.section("Failed fits", "\n".join(f"- {s}" for s in failed))
    budgets = {}
    for _, family, _, runs, budget in plan:
        budgets.setdefault(
            f"{family}: {budget.steps} steps of {budget.samples} draws (Adam, lr {budget.lr}, cosine)", set()
        ).add(runs)
    b0 = plan[0][4]
    report.section(
        "Protocol",
        (
            "Quick variant: two targets, one run each (two for NSF), 150 steps (a smoke test, not a result)."
            if quick
            else (_plan.__doc__ or "").split("\n\n")[-1].strip().replace("\n    ", " ")
        )
        + "\n\nTraining: "
        + "; ".join(f"{k} x {'/'.join(map(str, sorted(v)))} runs" for k, v in budgets.items())
        + f". Seeds {seed}, {seed + 100}, ... for the runs. k-hat over {b0.sample_sets} sets of "
        f"{b0.set_size} draws per run; ELBO over {b0.elbo_samples} draws; missing mass by defensive "
        f"importance sampling ({b0.defensive_samples} draws); 'ref. in low q' is the share of the reference "
        "draws where q < 0.01 p; mean errors are importance-reweighted, in units of the reference sd, worst "
        "run shown. 'KL' is log p(y) - ELBO (no ELBO can exceed log p(y)). 'restarts': whether the runs of "
        "a configuration agree (restart_agreement), with the largest share of one run's draws where another "
        "run's density is negligible. All diagnostics in float64.",
    )
    report.figure(
        _khat_figure(groups), "khat_vs_depth.png", "k-hat and KL against the number of planar layers."
    )
    for name in ("two-schools-centered", "eight-schools-centered"):
        flows = {label: f for (t, _), (_, label, f) in sorted(best_flows.items()) if t == name}
        if flows:
            report.figure(
                _scatter_figure(name, flows),
                f"scatter_{name}.png",
                f"theta_1 against log tau on {name}: reference draws and the best fits.",
            )

    # Verdicts: the seed's depth trend on two schools, and issue 7's quality bar.
    two = sorted(
        (x for x in groups if x["target"] == "two-schools-centered" and x["family"] == "planar"),
        key=lambda x: x["depth"],
    )
    if len(two) >= 2:
        falls = two[-1]["khat_mean"] < two[0]["khat_mean"]
        report.verdict(
            falls if len(two) > 2 else None,
            f"two schools, centred: planar k-hat goes from {two[0]['khat_mean']:.2f} (depth "
            f"{two[0]['depth']}) to {two[-1]['khat_mean']:.2f} (depth {two[-1]['depth']}); KL from "
            f"{two[0]['kl']:.3f} to {two[-1]['kl']:.3f}.",
        )
    for name, khat_max, gap_max in (
        ("eight-schools-centered", 0.5, 0.15),
        ("eight-schools-noncentered", 0.3, 0.05),
    ):
        cands = [r for r in done if r["target"] == name]
        if not cands:
            continue
        centred = "noncentered" not in name

        def passes(
            r: dict, khat_max: float = khat_max, gap_max: float = gap_max, centred: bool = centred
        ) -> bool:
            moments = max(abs(v) for v in r["reweighted_mean_error"][-2:]) < 0.1 if centred else True
            return r["khat_mean"] < khat_max and r["kl"] < gap_max and moments

        ok = [r for r in cands if passes(r)]
        best = min(cands, key=lambda r: r["kl"])
        report.verdict(
            None if quick else bool(ok),
            f"quality bar on {name} (k-hat < {khat_max}, ELBO within {gap_max} nats"
            f"{', reweighted E[mu], E[log tau] within 0.1 sd' if centred else ''}): {len(ok)} of "
            f"{len(cands)} fits pass; the closest ELBO is {best['family']} {best['depth']} with KL "
            f"{best['kl']:.3f}, k-hat {best['khat_mean']:.2f}"
            f"{' (not judged on the quick budget)' if quick else ''}.",
        )
    khat_warning(report, done)
    results = {
        "rows": rows,
        "groups": groups,
        "plan": [(*p[:4], p[4].__dict__) for p in plan],
        "log_z": log_z,
    }
    report.write(results)
    return results
