"""fit_vi(restarts=R): R fits from fresh initialisations, cross-evaluated, the best kept."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge import models, targets
from flowforge import transforms as T
from flowforge.train.restarts import fresh_copy


def test_fresh_copy_is_a_new_initialisation_of_the_same_architecture():
    torch.manual_seed(0)
    flow = models.PlanarFlow(3, layers=2)
    state = torch.random.get_rng_state()
    a, b = fresh_copy(flow, seed=1), fresh_copy(flow, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert [p.shape for p in a.parameters()] == [p.shape for p in flow.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), flow.parameters(), strict=True))


def test_a_flow_that_cannot_be_reinitialised_is_refused():
    class Plain(T.Transform):  # a user's layer: no spec, no reset_parameters
        event_dim = 1

        def __init__(self):
            super().__init__()
            self.shift = torch.nn.Parameter(torch.zeros(2))

        def _forward(self, x, context=None):
            return x + self.shift, x.new_zeros(x.shape[:-1])

        def _inverse(self, y, context=None):
            return y - self.shift, y.new_zeros(y.shape[:-1])

    flow = ff.Flow(ff.distributions.StandardNormal((2,)), [Plain()])
    with pytest.raises(ValueError, match="re-initialised"):
        fresh_copy(flow, seed=0)


def test_restarts_keep_the_best_fit_and_report_agreement():
    target = targets.GaussianMixture(components=1, radius=0.0, scale=0.5)
    flow = models.PlanarFlow(2, layers=2)
    h = ff.fit_vi(flow, target, steps=120, samples=64, lr=0.02, restarts=3, progress=False, seed=0)
    s = h.summary
    assert s["restarts"] == 3 and len(h.restart_flows) == 3 and len(s["restart_elbos"]) == 3
    assert s["restart_best"] == max(range(3), key=lambda i: s["restart_elbos"][i])
    best = h.restart_flows[s["restart_best"]]
    assert all(torch.equal(p, q) for p, q in zip(flow.parameters(), best.parameters(), strict=True))
    # the three fits started from different initialisations and trained separately
    firsts = [next(f.parameters()).detach().clone() for f in h.restart_flows]
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])
    assert s["restart_agreement"]["agree"] is True  # one Gaussian: every restart finds it
    with pytest.raises(ValueError, match="restarts"):
        ff.fit_vi(flow, target, steps=1, restarts=0, progress=False)


def test_cli_vi_prints_the_verdict_and_khat(tmp_path):
    from typer.testing import CliRunner

    from flowforge.cli import app

    out = tmp_path / "run"
    args = ["vi", "--target", "banana", "--model", "PlanarFlow", "--steps", "60", "--restarts", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "verdict: " in result.output and "PSIS k-hat" in result.output
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["restarts"] == 2 and "restarts" in metrics["diagnostics"]
    assert metrics["verdict"] and metrics["psis_khat"] is not None


def test_vi_draws_export_to_csv_and_arviz_netcdf(tmp_path):
    pytest.importorskip("arviz_base")
    xr = pytest.importorskip("xarray")
    import json

    from typer.testing import CliRunner

    from flowforge.cli import app

    run = tmp_path / "run"
    args = ["vi", "--target", "eight-schools-noncentered", "--model", "IAF", "--steps", "20"]
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--no-progress", "--no-plots"])
    assert result.exit_code == 0, result.output
    for name in ("d.nc", "d.csv"):
        result = CliRunner().invoke(app, ["sample", str(run), "-n", "200", "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    header = (tmp_path / "d.csv").read_text().splitlines()[0].split(",")
    names = targets.get("eight-schools-noncentered").names
    assert header == names
    tree = xr.open_datatree(tmp_path / "d.nc", engine="h5netcdf")
    assert set(tree["posterior"].data_vars) == set(names)
    assert tree["posterior"]["mu"].shape == (1, 200)
    log_w = tree["sample_stats"]["log_weight"].values
    assert log_w.shape == (1, 200) and bool((log_w == log_w).all())  # finite-or-inf, never NaN
    assert json.loads((run / "metrics.json").read_text())["target"] == "eight-schools-noncentered"
