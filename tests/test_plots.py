"""Figures: every plot renders to a PNG with labelled axes and a title; non-2-D flows are refused."""

from __future__ import annotations

import math

import pytest
import torch

import flowforge as ff
from flowforge import plots
from flowforge import transforms as T
from flowforge.datasets import generate
from flowforge.train import History


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    flow = ff.Flow(
        ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.RationalQuadraticSpline(2, bins=4)]
    )
    history = ff.fit(flow, generate("moons", 500), steps=30, progress=False)
    return flow, history


def banana(x):
    return -0.5 * (x[..., 0] ** 2 / 4 + (x[..., 1] - 0.25 * x[..., 0] ** 2) ** 2) - math.log(4 * math.pi)


def _vi_history() -> History:
    h = History("vi")
    for step in range(1, 41):
        h.log(step=step, loss=1.0 / step, elbo=-1.0 / step, elbo_se=0.05, beta=1.0, nonfinite=0.0)
    return h


def _figures(flow, history):
    data = generate("moons", 300, seed=1)
    return {
        "density": plots.density_and_data(flow, data, resolution=40),
        "samples": plots.samples_and_data(flow, data, n=200),
        "loss": plots.loss_curves(history),
        "grid": plots.grid_deformation(flow, data=data, lines=5, points=30),
        "layers": plots.layer_by_layer(flow, n=200),
        "vi": plots.vi_density(flow, banana, resolution=30),
        "elbo": plots.elbo_curve(_vi_history(), log_z=0.0),
    }


def test_every_figure_is_labelled_and_saves_as_png(flow, tmp_path):
    for name, fig in _figures(*flow).items():
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                continue
            assert ax.get_title(), f"{name}: an axis without title"
            assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axis without labels"
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_panels_follow_the_layers(flow):
    titles = [ax.get_title() for ax in plots.layer_by_layer(flow[0], n=100).axes if ax.get_visible()]
    assert titles[0] == "base distribution"
    assert titles[1:] == [
        f"after layer {i + 1}: {type(t).__name__}" for i, t in enumerate(flow[0].transform.transforms)
    ]


def test_two_d_figures_refuse_other_dimensions():
    flow3 = ff.Flow(ff.distributions.StandardNormal((3,)), [T.LULinear(3)])
    with pytest.raises(ValueError, match=r"2-D flow; got event shape \(3,\)"):
        plots.density_and_data(flow3, torch.randn(10, 3))
