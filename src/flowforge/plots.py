"""Figures of fitted flows (matplotlib; PNG through :func:`save_figure`).

Each function returns a ``matplotlib.figure.Figure`` built without pyplot, so nothing
depends on (or changes) the user's matplotlib backend. The density, sample, grid and
layer figures need 2-D flows; the curves work for any run.

- :func:`density_and_data`: the learned log-density next to the data;
- :func:`samples_and_data`: samples next to the data;
- :func:`loss_curves`: training and validation loss of :func:`~flowforge.fit`;
- :func:`grid_deformation`: a regular grid of the base space and its image under the flow;
- :func:`layer_by_layer`: base samples pushed through the layers one at a time;
- :func:`vi_density`: the target density next to the fitted one (variational inference);
- :func:`elbo_curve`: the ELBO of :func:`~flowforge.fit_vi` over the steps.

Examples:
    >>> import torch, flowforge as ff
    >>> from flowforge import plots, transforms as T
    >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2)])
    >>> fig = plots.samples_and_data(flow, torch.randn(100, 2), n=100)
    >>> [ax.get_title() for ax in fig.axes]
    ['data (100 points)', 'flow samples (100)']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .flow import Flow
from .train.history import History

__all__ = [
    "density_and_data",
    "elbo_curve",
    "grid_deformation",
    "layer_by_layer",
    "loss_curves",
    "samples_and_data",
    "save_figure",
    "vi_density",
]

Bounds = tuple[float, float, float, float]


def _two_d(flow: Flow) -> None:
    if tuple(flow.event_shape) != (2,):
        raise ValueError(f"this figure needs a 2-D flow; got event shape {tuple(flow.event_shape)}")


def _bounds(points: Tensor, pad: float = 0.1) -> Bounds:
    p = points.detach().double().cpu()
    p = p[torch.isfinite(p).all(-1)]
    lo = torch.quantile(p, 0.005, dim=0)
    hi = torch.quantile(p, 0.995, dim=0)
    span = (hi - lo).clamp_min(1e-6)
    lo, hi = lo - pad * span, hi + pad * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _grid(bounds: Bounds, resolution: int) -> tuple[np.ndarray, np.ndarray, Tensor]:
    xs = np.linspace(bounds[0], bounds[1], resolution)
    ys = np.linspace(bounds[2], bounds[3], resolution)
    xx, yy = np.meshgrid(xs, ys, indexing="xy")
    return xx, yy, torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], -1))


@torch.no_grad()
def _log_prob(flow: Flow, points: Tensor, chunk: int = 8192) -> np.ndarray:
    p = next((t for t in flow.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    out = [
        flow.log_prob(points[i : i + chunk].to(device, dtype)).double().cpu()
        for i in range(0, len(points), chunk)
    ]
    return torch.cat(out).numpy()


@torch.no_grad()
def _sample(flow: Flow, n: int) -> np.ndarray:
    return flow.sample((n,)).double().cpu().numpy()


def _label(ax, title: str, bounds: Bounds | None = None) -> None:
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if bounds is not None:
        ax.set_xlim(bounds[0], bounds[1])
        ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect("equal", adjustable="box")


def _scatter(ax, points: np.ndarray, color: str = "tab:blue") -> None:
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.35, color=color, linewidths=0, rasterized=True)


def density_and_data(
    flow: Flow, data: Tensor, *, bounds: Bounds | None = None, resolution: int = 200, max_points: int = 5000
) -> Figure:
    """The data (left) next to the learned log-density on a grid (right, clipped 12 nats below the peak)."""
    _two_d(flow)
    bounds = bounds or _bounds(data)
    xx, yy, pts = _grid(bounds, resolution)
    logp = _log_prob(flow, pts).reshape(xx.shape)
    finite = np.isfinite(logp)
    top = logp[finite].max() if finite.any() else 0.0
    shown = np.where(finite, np.clip(logp, top - 12, top), np.nan)
    fig = Figure(figsize=(10, 4.4))
    left, right = fig.subplots(1, 2)
    _scatter(left, data[:max_points].detach().double().cpu().numpy())
    _label(left, f"data ({min(len(data), max_points)} points)", bounds)
    image = right.pcolormesh(xx, yy, shown, cmap="viridis", shading="auto", rasterized=True)
    fig.colorbar(image, ax=right, label="log p(x)")
    _label(right, "learned log-density", bounds)
    fig.tight_layout()
    return fig


def samples_and_data(flow: Flow, data: Tensor, *, n: int = 3000, bounds: Bounds | None = None) -> Figure:
    """Data (left) and as many flow samples (right) on the same axes."""
    _two_d(flow)
    bounds = bounds or _bounds(data)
    fig = Figure(figsize=(10, 4.4))
    left, right = fig.subplots(1, 2)
    _scatter(left, data[:n].detach().double().cpu().numpy())
    _label(left, f"data ({min(len(data), n)} points)", bounds)
    _scatter(right, _sample(flow, n), color="tab:orange")
    _label(right, f"flow samples ({n})", bounds)
    fig.tight_layout()
    return fig


def _smooth(values: Sequence[float], width: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    v = np.where(ok, v, 0.0)
    kernel = np.ones(width)
    num = np.convolve(v, kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def loss_curves(history: History) -> Figure:
    """Training loss per step (raw and smoothed) and the validation loss of a ``fit`` run."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    steps = np.asarray(history["step"])
    loss = np.asarray(history["loss"])
    ax.plot(steps, loss, color="tab:blue", alpha=0.25, lw=0.8, label="training loss (per step)")
    ax.plot(
        steps,
        _smooth(loss, max(1, len(loss) // 50)),
        color="tab:blue",
        lw=1.8,
        label="training loss (smoothed)",
    )
    if history.evals.get("val_loss"):
        ax.plot(
            history.evals["step"], history.evals["val_loss"], "o-", color="tab:red", ms=3, label="validation"
        )
    finite = loss[np.isfinite(loss)]
    if finite.size:
        lo, hi = np.percentile(finite, 1), np.percentile(finite, 99)
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    for e in history.events:
        if e["kind"] == "rollback":
            ax.axvline(e["step"], color="gray", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("negative log-likelihood (nats)")
    ax.set_title("loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


@torch.no_grad()
def grid_deformation(
    flow: Flow, *, extent: float = 3.0, lines: int = 17, points: int = 200, data: Tensor | None = None
) -> Figure:
    """A regular grid of the base space (left) and its image under the flow's forward map (right)."""
    _two_d(flow)
    ticks = np.linspace(-extent, extent, lines)
    fine = np.linspace(-extent, extent, points)
    polylines = [np.stack([np.full_like(fine, t), fine], -1) for t in ticks]
    polylines += [np.stack([fine, np.full_like(fine, t)], -1) for t in ticks]
    p = next((t for t in flow.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    stacked = torch.as_tensor(np.stack(polylines), dtype=dtype)
    if p is not None:
        stacked = stacked.to(p.device)
    mapped = flow(stacked.reshape(-1, 2))[0].reshape(stacked.shape).double().cpu().numpy()
    fig = Figure(figsize=(10, 4.6))
    left, right = fig.subplots(1, 2)
    colors = ["tab:blue"] * lines + ["tab:orange"] * lines
    for line, color in zip(polylines, colors):
        left.plot(line[:, 0], line[:, 1], color=color, lw=0.7)
    _label(left, "regular grid in the base space (z)")
    left.set_xlabel("$z_1$")
    left.set_ylabel("$z_2$")
    if data is not None:
        _scatter(right, data[:3000].detach().double().cpu().numpy(), color="lightgray")
    for line, color in zip(mapped, colors):
        ok = np.isfinite(line).all(-1)
        right.plot(line[ok, 0], line[ok, 1], color=color, lw=0.7)
    bounds = _bounds(data) if data is not None else _bounds(torch.as_tensor(mapped.reshape(-1, 2)), 0.05)
    _label(right, "its image under the flow (x = T(z))", bounds)
    fig.tight_layout()
    return fig


@torch.no_grad()
def layer_by_layer(flow: Flow, *, n: int = 2000, max_panels: int = 8, seed: int = 0) -> Figure:
    """Base samples and their images after successive layers (evenly chosen if there are many)."""
    _two_d(flow)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        z = flow.base.sample((n,))
    finally:
        torch.set_rng_state(generator_state)
    stages = [("base distribution", z)]
    x = z
    layers = list(flow.transform.transforms)
    for i, t in enumerate(layers):
        x = t(x)[0]
        stages.append((f"after layer {i + 1}: {type(t).__name__}", x))
    if len(stages) > max_panels:
        keep = np.unique(np.linspace(0, len(stages) - 1, max_panels).round().astype(int))
        stages = [stages[i] for i in keep]
    cols = min(4, len(stages))
    rows = math.ceil(len(stages) / cols)
    fig = Figure(figsize=(3.3 * cols, 3.3 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (title, pts) in zip(axes, stages):
        arr = pts.double().cpu().numpy()
        _scatter(ax, arr, color="tab:purple")
        _label(ax, title, _bounds(pts, 0.05))
        ax.title.set_fontsize(9)
    for ax in axes[len(stages) :]:
        ax.set_visible(False)
    fig.suptitle("samples pushed through the flow, layer by layer")
    fig.tight_layout()
    return fig


@torch.no_grad()
def vi_density(
    flow: Flow,
    log_density: Callable[[Tensor], Tensor],
    *,
    bounds: Bounds | None = None,
    reference: Tensor | None = None,
    resolution: int = 160,
) -> Figure:
    """The target density (normalized on the grid, NaN counted as 0) next to the fitted flow's density.

    The axes cover the flow's samples and, if given, ``reference`` draws from the target (so
    that mass the flow misses is in view).
    """
    _two_d(flow)
    if bounds is None:
        points = torch.as_tensor(_sample(flow, 4000))
        if reference is not None:
            points = torch.cat([points, reference.detach().double().cpu()[:4000]])
        bounds = _bounds(points, 0.3)
    xx, yy, pts = _grid(bounds, resolution)
    p = next((t for t in flow.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    target = torch.cat(
        [log_density(pts[i : i + 8192].to(dtype)).double().cpu() for i in range(0, len(pts), 8192)]
    ).numpy()
    target = np.where(np.isfinite(target), target, -np.inf)
    cell = (xx[0, 1] - xx[0, 0]) * (yy[1, 0] - yy[0, 0])
    dens_t = np.exp(target - target.max())
    dens_t = (dens_t / max(dens_t.sum() * cell, 1e-300)).reshape(xx.shape)
    dens_q = np.exp(_log_prob(flow, pts)).reshape(xx.shape)
    top = max(np.nanmax(dens_t), np.nanmax(dens_q))
    fig = Figure(figsize=(10, 4.4))
    left, right = fig.subplots(1, 2)
    for ax, dens, title in (
        (left, dens_t, "target density (normalized on the grid)"),
        (right, dens_q, "fitted flow density"),
    ):
        image = ax.pcolormesh(xx, yy, dens, cmap="magma", vmin=0, vmax=top, shading="auto", rasterized=True)
        _label(ax, title, bounds)
    fig.colorbar(image, ax=[left, right], label="density", shrink=0.9)
    return fig


def elbo_curve(history: History, *, log_z: float | None = None) -> Figure:
    """The ELBO per step (smoothed, with a band of two Monte Carlo standard errors) of a ``fit_vi`` run."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    steps = np.asarray(history["step"])
    elbo = np.asarray(history["elbo"])
    se = np.asarray(history["elbo_se"])
    width = max(1, len(elbo) // 50)
    mean = _smooth(elbo, width)
    band = _smooth(se, width) / math.sqrt(width)
    ax.plot(steps, elbo, color="tab:green", alpha=0.25, lw=0.8, label="ELBO (per step)")
    ax.plot(steps, mean, color="tab:green", lw=1.8, label=f"ELBO (mean of {width} steps)")
    ax.fill_between(steps, mean - 2 * band, mean + 2 * band, color="tab:green", alpha=0.2, label="± 2 s.e.")
    if "iw_bound" in history.steps:
        ax.plot(steps, _smooth(history["iw_bound"], width), color="tab:purple", lw=1.2, label="IW bound")
    if log_z is not None:
        ax.axhline(log_z, color="black", ls="--", lw=1, label="log Z (exact)")
    finite = elbo[np.isfinite(elbo)]
    if finite.size:
        lo, hi = (
            np.percentile(finite, 2),
            max(np.percentile(finite, 100), log_z if log_z is not None else -np.inf),
        )
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO (nats)")
    ax.set_title("evidence lower bound")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (the parent directory is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
