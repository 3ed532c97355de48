"""Seed 000 (Kong & Chaudhuri): ReLU planar layers approximate any 1-D density.

In 1-D a ReLU planar layer ``x = z + u relu(w z + b)`` is the identity on one side of its kink
and rescales the other side (slope ``1 + w u``), so ``L`` layers give a monotone piecewise linear
map and a piecewise Gaussian density. The seed's universality proof builds such a map piece by
piece; its figure shows 50 and 300 layers. Here ``L = 5, 20, 50, 300`` layers are fitted to two
targets (a three-component Gaussian mixture and a piecewise constant density with an empty
interval) and the total variation distance is measured on a fine grid.

**Objective.** The fit is quantile regression on target samples (1-D optimal transport: the
squared W2 distance between the flow and the samples), a smooth objective. Maximum likelihood
was tried first and dropped: the density of a ReLU planar flow jumps at every kink, so the
autograd gradient of the log-likelihood misses the jump terms and the fits drifted; reverse KL
is ruled out by the piecewise constant target (zero on an interval, while a planar flow has full
support, so the reverse KL is infinite).

**Parameterisation.** Through ``L`` module calls per step a 300-layer flow costs ~10 ms per layer
and step on this machine; the fit instead runs on a vectorised form of the construction: a
monotone piecewise linear map with ``L - 2`` kinks at equal-mass base quantiles, trained images
of the kinks and trained end slopes. Such a map is exactly ``L`` ReLU planar layers (one per kink,
two far outside the data for the overall scale and shift; see ``_PiecewiseLinear.to_flow``). The
fitted layers are loaded into :class:`~flowforge.transforms.Planar` modules and every reported
number (total variation, densities) comes from the modules' ``log_prob`` (exact planar inverse).
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..distributions import StandardNormal
from ..flow import Flow
from ..transforms import Planar
from ..transforms.planar import MARGIN
from .common import Report, markdown_table
from .vi_common import one_thread

__all__ = ["CLAIM", "NAME", "SEED", "run", "total_variation"]

NAME = "planar-1d"
SEED = "000_af4b9785d4512bed.txt"
CLAIM = (
    "In one dimension ReLU planar layers f(z) = z + u ReLU(wz + b) are universal: stacks of them transform "
    "a standard Gaussian arbitrarily close in total variation to any density (through piecewise Gaussian "
    "densities); the seed demonstrates 50 and 300 layers."
)


class Mixture:
    """A 1-D Gaussian mixture: ``sum_k pi_k N(mu_k, sd_k^2)``."""

    def __init__(self, weights: list[float], means: list[float], sds: list[float]) -> None:
        self.w, self.mu, self.sd = (torch.tensor(v, dtype=torch.float64) for v in (weights, means, sds))

    def pdf(self, x: Tensor) -> Tensor:
        z = (x[..., None] - self.mu) / self.sd
        return (self.w * torch.exp(-0.5 * z**2) / (self.sd * math.sqrt(2 * math.pi))).sum(-1)

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        k = torch.multinomial(self.w, n, replacement=True, generator=gen)
        return self.mu[k] + self.sd[k] * torch.randn(n, generator=gen, dtype=torch.float64)


class Steps:
    """A piecewise constant density with the given edges and (unnormalised) heights."""

    def __init__(self, edges: list[float], heights: list[float]) -> None:
        self.edges = torch.tensor(edges, dtype=torch.float64)
        h = torch.tensor(heights, dtype=torch.float64)
        self.mass = h * self.edges.diff()
        self.h = h / self.mass.sum()
        self.mass = self.mass / self.mass.sum()

    def pdf(self, x: Tensor) -> Tensor:
        i = torch.bucketize(x, self.edges, right=True) - 1
        inside = (i >= 0) & (i < len(self.h))
        return torch.where(inside, self.h[i.clamp(0, len(self.h) - 1)], torch.zeros_like(x))

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        k = torch.multinomial(self.mass, n, replacement=True, generator=gen)
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        return self.edges[k] + u * (self.edges[k + 1] - self.edges[k])


TARGETS = {
    "mixture": Mixture([0.25, 0.45, 0.3], [-2.2, 0.3, 2.5], [0.35, 0.7, 0.3]),
    "steps": Steps([-3.0, -2.0, -1.0, 0.0, 0.5, 1.5, 3.0], [0.6, 1.2, 0.3, 0.0, 1.5, 0.5]),
}


def _config(quick: bool) -> dict:
    if quick:
        return {"depths": (5, 50), "samples": 20000, "iters": 300, "grid": 8001}
    return {"depths": (5, 20, 50, 300), "samples": 200000, "iters": 800, "grid": 40001}


def _softplus_inv(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


class _PiecewiseLinear(torch.nn.Module):
    """The fit-time form of ``L`` ReLU planar layers: a monotone piecewise linear map.

    Kinks ``k_1 < ... < k_m`` (``m = L - 2``) sit at the base quantiles ``j / (m + 1)`` (equal base
    mass per piece); trained are the images ``x_j = f(k_j)`` (increasing) and the two end slopes.
    Each kink is one layer; two more layers with kinks far outside the data supply the overall
    scale and shift (see :meth:`to_flow`).
    """

    def __init__(self, layers: int) -> None:
        super().__init__()
        if layers < 3:
            raise ValueError(f"the construction needs at least 3 layers; got {layers}")
        m = layers - 2
        q = torch.arange(1, m + 1, dtype=torch.float64) / (m + 1)
        self.register_buffer("knots", torch.special.ndtri(q))
        self.first = torch.nn.Parameter(self.knots[:1].clone())  # identity start
        self.steps = torch.nn.Parameter(_softplus_inv(self.knots.diff()))
        self.log_ends = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def pieces(self) -> tuple[Tensor, Tensor, Tensor]:
        """Kinks ``k_j``, their images ``x_j`` and the log-slopes of the m + 1 pieces (left to right)."""
        x = torch.cat([self.first, self.first + torch.cumsum(torch.nn.functional.softplus(self.steps), 0)])
        inner = torch.log(x.diff()) - torch.log(self.knots.diff())
        log_slope = torch.cat([self.log_ends[:1], inner, self.log_ends[1:]])
        # keeps exp() finite; _set checks the planar constraint (ratio > 1e-4) when the layers are built
        return self.knots, x, log_slope.clamp_min(-30.0)

    def forward(self, z: Tensor) -> Tensor:
        """The map itself, ``z -> x``: continuous in ``z`` and in the parameters."""
        k, x_k, log_slope = self.pieces()
        p = torch.searchsorted(k, z)  # fixed kinks: the piece of a z never depends on the parameters
        j = (p - 1).clamp_min(0)
        return x_k[j] + (z - k[j]) * torch.exp(log_slope[p])

    def log_prob(self, x: Tensor) -> Tensor:
        k, x_k, log_slope = self.pieces()
        p = torch.searchsorted(x_k.detach(), x)  # piece index 0..m
        j = (p - 1).clamp_min(0)
        z = k[j] + (x - x_k[j]) * torch.exp(-log_slope[p])
        return -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - log_slope[p]

    @torch.no_grad()
    def to_flow(self) -> Flow:
        """The same map as ``L`` :class:`~flowforge.transforms.Planar` ReLU layers over N(0, 1).

        Layers 1..m: at kink ``k_j`` (in the current coordinate) the right side is rescaled by
        ``sigma_j / sigma_{j-1}``; this makes slope 1 left of ``k_1`` and fixes ``k_1``. The last
        two layers have kinks at ``+R`` and ``-R`` far beyond any mass (``R`` >= 100 and 10x the
        image of ``|z| = 12``), so on the data they are the affine maps that set the left slope to
        ``sigma_0`` and move ``k_1`` to ``x_1``.
        """
        k, x_k, log_slope = self.pieces()
        m = len(k)
        flow = Flow(StandardNormal((1,)), [Planar(1, activation="relu") for _ in range(m + 2)]).double()
        layers = list(flow.transform)

        def push(v: Tensor, upto: int) -> Tensor:
            v = v.reshape(-1, 1)
            for layer in layers[:upto]:
                v, _ = layer(v)
            return v.reshape(-1)

        for j in range(m):
            ratio = log_slope[j + 1] - log_slope[j] if j else log_slope[1] - log_slope[0]
            _set(layers[j], w=1.0, kink=float(push(k[j], j)), s=float(torch.expm1(ratio)))
        # after the kink layers: slope 1 left of k_1 and h(k_1) = k_1; now y -> sigma_0 y + shift
        sigma0 = float(log_slope[0].exp())
        shift = float(x_k[0]) - sigma0 * float(k[0])
        r = 10 * float(push(torch.tensor([-12.0, 12.0], dtype=torch.float64), m).abs().max()) + 100
        r = max(r, 10 * abs(shift))
        s_b = (shift / r + sigma0 - 1) / 2  # layer B: y -> (1 + s_b) y + s_b r (kink at -r)
        s_a = sigma0 / (1 + s_b) - 1  # layer A: y -> (1 + s_a) y - s_a r (kink at +r)
        _set(layers[m], w=-1.0, kink=r, s=s_a)
        _set(layers[m + 1], w=1.0, kink=-r, s=s_b)
        return flow


def _set(layer: Planar, *, w: float, kink: float, s: float) -> None:
    """Make ``layer`` the ReLU planar map with ``w = +-1``, its kink at ``kink`` and ``w u_hat = s``.

    ``x = z + s w relu(w z + b)``: slope ``1 + s`` on the active side of the kink, 1 on the other.
    """
    if s <= -(1 - MARGIN):
        raise ValueError(f"a planar layer needs w^T u_hat > -1 + {MARGIN}; got {s}")
    lo = -(1.0 - MARGIN)  # constrain_inner(a) = lo + softplus(a + c) for ReLU (sup h' = 1)
    c = math.log(math.expm1(-lo))
    a = float(_softplus_inv(torch.tensor(s - lo, dtype=torch.float64))) - c
    layer.w.fill_(w)
    layer.u.fill_(a * w)  # u_hat = u + (m(w u) - w u) w / w^2 = s w since w^2 = 1
    layer.b.fill_(-w * kink)


def _fit(target, layers: int, cfg: dict, gen: torch.Generator) -> tuple[Flow, float, float]:
    """Quantile regression on target samples; the Planar flow, its agreement with the fit form, secs.

    With ``n`` sorted samples ``x_(i)`` and base quantiles ``z_i = Phi^-1((i - 1/2) / n)``, minimise
    ``mean_i (f(z_i) - x_(i))^2``: the squared 1-D Wasserstein-2 distance between ``f#N(0, 1)`` and
    the samples' empirical distribution (for monotone ``f`` the optimal coupling is by rank).
    """
    started = time.time()
    model = _PiecewiseLinear(layers)
    x = torch.sort(target.sample(cfg["samples"], gen)).values
    n = len(x)
    z = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    opt = torch.optim.LBFGS(
        model.parameters(),
        max_iter=cfg["iters"],
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (model(z) - x).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    flow = model.to_flow()
    check = target.sample(2000, gen)
    with torch.no_grad():
        gap = float((flow.log_prob(check[:, None]) - model.log_prob(check)).abs().max())
    return flow, gap, time.time() - started


@torch.no_grad()
def total_variation(log_q, pdf_p, *, lim: float = 10.0, n: int = 40001) -> float:
    """``TV = 1/2 int |p - q| dx`` by the trapezoid rule on ``[-lim, lim]``, plus q's mass outside.

    ``log_q`` maps ``(n, 1)`` points to log densities; ``pdf_p`` maps ``(n,)`` points to densities
    (``p`` must have negligible mass outside the window).

    Examples:
        >>> import torch
        >>> from torch.distributions import Normal
        >>> q, p = Normal(0.0, 1.0), Normal(0.5, 1.0)
        >>> tv = total_variation(lambda x: q.log_prob(x[:, 0]), lambda x: p.log_prob(x).exp())
        >>> round(tv, 4)  # exact: 2 Phi(0.25) - 1 = 0.1974
        0.1974
    """
    x = torch.linspace(-lim, lim, n, dtype=torch.float64)
    q = torch.exp(log_q(x[:, None]).to(torch.float64))
    p = pdf_p(x).to(torch.float64)
    inside = torch.trapezoid(q, x)
    return float(0.5 * torch.trapezoid((p - q).abs(), x) + 0.5 * (1 - inside).clamp_min(0))


def _figures(flows: dict, tvs: dict, depths: tuple[int, ...]) -> tuple[Figure, Figure]:
    x = torch.linspace(-4.5, 4.5, 3001, dtype=torch.float64)
    over = Figure(figsize=(3.0 * len(depths), 2.6 * len(TARGETS)))
    axes = over.subplots(len(TARGETS), len(depths), squeeze=False)
    for i, (name, target) in enumerate(TARGETS.items()):
        p = target.pdf(x).numpy()
        for j, depth in enumerate(depths):
            ax = axes[i, j]
            with torch.no_grad():
                q = flows[(name, depth)].log_prob(x[:, None]).exp().numpy()
            ax.fill_between(x.numpy(), p, color="0.8", label="target p")
            ax.plot(x.numpy(), q, color="C3", lw=1.2, label="flow q")
            ax.set_title(f"{name}, {depth} layers: TV {tvs[(name, depth)]:.3f}", fontsize=9)
            ax.set_xlabel("x")
            if j == 0:
                ax.set_ylabel("density")
                ax.legend(fontsize=7, loc="upper left")
    over.tight_layout()
    curve = Figure(figsize=(4.5, 3.4))
    ax = curve.subplots()
    for name in TARGETS:
        ax.plot(depths, [tvs[(name, d)] for d in depths], "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("ReLU planar layers L")
    ax.set_ylabel("total variation TV(p, q)")
    ax.set_title("TV vs depth (quantile-regression fits)")
    ax.legend()
    curve.tight_layout()
    return over, curve


def run(*, quick: bool, out: Path, seed: int) -> dict:
    """Fit every (target, depth), measure TV on a grid, write results.json, figures and report.md."""
    cfg = _config(quick)
    report = Report(NAME, seed_text=SEED, claim=CLAIM, out=out, quick=quick, seed=seed)
    rows, flows, tvs = [], {}, {}
    with one_thread():
        gen = torch.Generator().manual_seed(seed)
        for name, target in TARGETS.items():
            for depth in cfg["depths"]:
                flow, gap, secs = _fit(target, depth, cfg, gen)
                tv = total_variation(flow.log_prob, target.pdf, n=cfg["grid"])
                flows[(name, depth)], tvs[(name, depth)] = flow, tv
                rows.append({"target": name, "layers": depth, "tv": tv, "logq_gap": gap, "fit_seconds": secs})
                print(f"[{NAME}] {name} L={depth}: TV {tv:.4f} ({secs:.0f} s)", flush=True)
        over, curve = _figures(flows, tvs, cfg["depths"])
        report.figure(
            over,
            "planar_1d_densities.png",
            "Target densities (grey) and the fitted ReLU planar flows (red), as in the seed's 50- and "
            "300-layer figures.",
        )
        report.figure(
            curve, "planar_1d_tv.png", "Total variation distance to the target vs the number of layers."
        )
    report.section(
        "Setup",
        f"Targets: `mixture` = 0.25 N(-2.2, 0.35^2) + 0.45 N(0.3, 0.7^2) + 0.3 N(2.5, 0.3^2); `steps` = "
        "piecewise constant on edges -3, -2, -1, 0, 0.5, 1.5, 3 with relative heights 0.6, 1.2, 0.3, 0, "
        f"1.5, 0.5 (empty on [0, 0.5]). Base N(0, 1). Layers L = {', '.join(map(str, cfg['depths']))}. "
        f"Fit: quantile regression (1-D optimal transport) on {cfg['samples']} target samples, up to "
        f"{cfg['iters']} L-BFGS iterations, in the construction's parameterisation (kinks at equal-mass "
        "base quantiles; see the module docstring). Maximum likelihood was tried first and dropped: a ReLU "
        "planar density jumps at every kink, so the autograd gradient of the log-likelihood misses the "
        "jump terms as kinks move past samples, and Adam drifted to worse fits (held-out NLL on the "
        "mixture rose from 1.87 to 4.3 over 800 steps at 50 layers). "
        "TV = 1/2 int |p - q| by the trapezoid rule on [-10, 10] with "
        f"{cfg['grid']} points, q from the Planar modules' log_prob. `log q gap`: the largest difference "
        "between the modules' log_prob and the fit-time formula on 2000 target samples (the two are the "
        "same map; it should be at rounding level).",
    )
    report.section(
        "Results",
        markdown_table(
            ["target", "layers", "TV", "log q gap", "fit s"],
            [
                [r["target"], r["layers"], r["tv"], f"{r['logq_gap']:.1e}", f"{r['fit_seconds']:.0f}"]
                for r in rows
            ],
        ),
    )
    lo, hi = min(cfg["depths"]), max(cfg["depths"])
    for name in TARGETS:
        seq = [tvs[(name, d)] for d in cfg["depths"]]
        monotone = all(b < a for a, b in itertools.pairwise(seq))
        report.verdict(
            monotone,
            f"{name}: TV falls from {tvs[(name, lo)]:.3f} ({lo} layers) to "
            f"{tvs[(name, hi)]:.3f} ({hi} layers)"
            + ("" if monotone else ", but not at every step (" + ", ".join(f"{v:.3f}" for v in seq) + ")")
            + ".",
        )
    results = {"config": cfg, "rows": rows}
    report.write(results)
    return results
