"""Seed 003 (after Rezende & Mohamed 2015, figure 3): planar and radial flows on the energies U1-U4.

Planar and radial flows with K = 2, 8, 32 layers are fitted by reverse KL to the four 2-D test
energies, next to a neural spline flow (our best family for comparison). For each fit: the ELBO
with its standard error (on U1 also the gap to the exact ``log Z = 1.8775``), PSIS k-hat over 5
sample sets, the importance ESS, and on U1 (the only normalisable energy) the posterior mass the
flow misses by defensive importance sampling, with the verdict line of issue 13. The figure
shows the true densities next to the fitted ones on ``[-4, 4]^2``, as in the paper.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import targets
from ..errors import FlowforgeError
from .common import Report, markdown_table
from .vi_common import Budget, fit_and_diagnose, khat_warning, one_thread

__all__ = ["CLAIM", "NAME", "SEED", "run"]

NAME = "energies"
SEED = "003_85b262ff283ae215.txt"
CLAIM = (
    "Normalizing flows turn a Gaussian into Rezende & Mohamed's test energies U1-U4 (symmetric, periodic "
    "and other non-trivial densities), and planar flows fit them better as the number of layers grows "
    "(K = 2, 8, 32 in the paper's figure)."
)

# U2-U4 are not normalisable (their mass grows with the length of z1 kept); the windowed
# versions are the same densities on the paper's box |z1| <= 4 with an exact log Z, so that the
# ELBO measures the fit instead of how far the flow spreads along z1.
ENERGIES = ("u1", "u2-window", "u3-window", "u4-window")


def _label(energy: str) -> str:
    return energy.split("-")[0].upper() + (" (window)" if "window" in energy else "")


BEST = "nsf"


def _config(quick: bool) -> list[tuple[str, tuple[int, ...], Budget]]:
    """(family, layer counts, budget) to run."""
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
        return [("planar", (2, 8), b), ("radial", (2, 8), b), (BEST, (2,), b)]
    # Planar and radial layers are cheap per layer but many; the spline flow gets a longer run
    # because it is the one held to issue 7's quality bar on U1 (within 0.02 nats of log Z).
    small = Budget(steps=2000, samples=128, lr=5e-3, anneal=(0.1, 500))
    best = Budget(steps=4000, samples=256, lr=5e-3, anneal=(0.1, 1000))
    return [("planar", (2, 8, 32), small), ("radial", (2, 8, 32), small), (BEST, (4,), best)]


@torch.no_grad()
def _density_grid(flow, lim: float = 4.0, n: int = 120) -> np.ndarray:
    g = torch.linspace(-lim, lim, n)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    try:
        dens = torch.exp(flow.log_prob(pts)).reshape(n, n).numpy()
    except FlowforgeError:
        # an iterative inverse failed on the grid: fall back to a histogram of samples
        x = flow.sample((200_000,)).numpy()
        dens, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=n, range=[[-lim, lim], [-lim, lim]], density=True)
    return dens


def _figure(fitted: dict, lim: float = 4.0, n: int = 120) -> Figure:
    labels = {k[1] for k in fitted}
    cols = ["target", *sorted(labels, key=lambda s: (s.split()[0], int(s.split("=")[-1])))]
    fig = Figure(figsize=(2.1 * len(cols), 2.1 * len(ENERGIES)))
    axes = fig.subplots(len(ENERGIES), len(cols), squeeze=False)
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    for i, energy in enumerate(ENERGIES):
        logp = targets.get(energy)(pts).reshape(n, n).numpy()
        for j, col in enumerate(cols):
            ax = axes[i, j]
            if col == "target":
                dens = np.exp(logp - logp.max())
            else:
                flow = fitted.get((energy, col))
                dens = _density_grid(flow, lim, n) if flow is not None else np.zeros((n, n))
            ax.imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col, fontsize=9)
            if j == 0:
                ax.set_ylabel(_label(energy))
    fig.tight_layout()
    return fig


def run(*, quick: bool, out: Path, seed: int) -> dict:
    """Fit every (energy, family, K) and write results.json, the density figure and report.md."""
    families = _config(quick)
    report = Report(NAME, seed_text=SEED, claim=CLAIM, out=out, quick=quick, seed=seed)
    rows, fitted, failed = [], {}, []
    with one_thread():
        for energy in ENERGIES:
            target = targets.get(energy)
            for family, depths, budget in families:
                for k in depths:
                    try:
                        row, flow = fit_and_diagnose(target, family, k, budget, seed=seed)
                    except FlowforgeError as e:  # a diverged fit: reported, not hidden
                        failed.append(f"{energy} {family} K={k}: {type(e).__name__}: {e}")
                        continue
                    row["energy"] = energy
                    rows.append(row)
                    fitted[(energy, f"{family} K={k}")] = flow
        report.figure(_figure(fitted), "energies.png", "True densities (left) and fitted flows on [-4, 4]^2.")
    if failed:
        report.section("Failed fits", "\n".join(f"- {f}" for f in failed))

    table = [
        [
            _label(r["energy"]),
            r["family"],
            r["depth"],
            f"{r['elbo']:.3f} ± {r['elbo_se']:.3f}",
            "" if r["kl"] is None else f"{r['kl']:.3f}",
            f"{r['khat_mean']:.2f}",
            f"{r['ess_fraction']:.2f}",
            f"{100 * r['missing_mass']:.0f}%" if "missing_mass" in r else "n/a",
            r["status"],
            f"{r['steps']}",
            f"{r['fit_seconds']:.0f}",
        ]
        for r in rows
    ]
    b0 = families[0][2]
    report.section(
        "Results",
        f"ELBO over {b0.elbo_samples} draws; k-hat is the mean over {b0.sample_sets} sets of "
        f"{b0.set_size} draws; ESS as a fraction of the draws; missing: posterior mass where q < 0.01 p "
        "(defensive importance sampling); KL = log Z - ELBO. U2-U4 are fitted in their windowed form "
        "(flowforge.targets.Energy(..., window=4.0): unchanged on |z1| <= 4, Gaussian fall-off of width 0.5 "
        "outside, exact log Z), because as given they are not normalisable and a flow raises their ELBO "
        "without bound by spreading along z1 (a first full run on the plain U2-U4 did exactly that). "
        "Training: "
        + "; ".join(
            f"{f}: {b.steps} steps of {b.samples} draws, lr {b.lr}, annealing {b.anneal}"
            for f, _, b in families
        )
        + ".\n\n"
        + markdown_table(
            ["energy", "family", "K", "ELBO", "KL", "k-hat", "ESS", "missing", "verdict", "steps", "fit s"],
            table,
        ),
    )

    # The seed's claim: more layers fit better (ELBO rises with K) for planar flows on every energy.
    verdicts = []
    for family, ks, _ in families[:2]:
        for energy in ENERGIES:
            by_k = {r["depth"]: r for r in rows if r["family"] == family and r["energy"] == energy}
            if len(by_k) < 2:
                verdicts.append(False)
                continue
            lo, hi = by_k[min(by_k)], by_k[max(by_k)]
            verdicts.append(hi["elbo"] > lo["elbo"] + 2 * math.hypot(lo["elbo_se"], hi["elbo_se"]))
        report.verdict(
            all(verdicts[-4:]),
            f"{family}: the ELBO rises from the fewest to the most layers ({', '.join(map(str, ks))}) on "
            f"{sum(verdicts[-4:])} of 4 energies (beyond two standard errors).",
        )
    u1 = [r for r in rows if r["energy"] == "u1"]
    best = max(u1, key=lambda r: r["elbo"])
    gap = targets.U1().log_z - best["elbo"]
    report.verdict(
        None if quick else gap < 0.02,
        f"quality bar (issue 7): the best U1 fit ({best['family']} K={best['depth']}) has ELBO "
        f"{best['elbo']:.4f} ± {best['elbo_se']:.4f}, {gap:.4f} nats below log Z = 1.8775 "
        f"(target: within 0.02{'; not judged on the quick budget' if quick else ''}).",
    )
    khat_warning(report, rows)
    flagged = [r for r in rows if r.get("status") == "misses"]
    report.section(
        "Missed mass (issue 13)",
        f"{len(flagged)} of {len(rows)} fits are flagged as missing mass"
        + (": " if flagged else ".")
        + "; ".join(
            f"{_label(r['energy'])} {r['family']} K={r['depth']}: {100 * r['missing_mass']:.0f}% missing, "
            f"k-hat {r['khat_mean']:.2f}, KL {r['kl']:.3f}"
            for r in flagged
        )
        + (
            f". On U1 a fit holding one of the two modes would have KL about log 2 = {math.log(2):.3f}."
            if flagged
            else ""
        ),
    )
    results = {"rows": rows, "failed": failed, "budgets": {f: b.__dict__ for f, _, b in families}}
    report.write(results)
    return results
