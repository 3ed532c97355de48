"""The training engines: fit, fit_vi, standardizer, rollbacks, checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import flowforge as ff
from flowforge import models
from flowforge import transforms as T
from flowforge.datasets import DataError, generate
from flowforge.train import (
    CheckpointError,
    History,
    TargetError,
    TrainingDivergedError,
    load_checkpoint,
    save_checkpoint,
)


def spline_flow(d: int = 2, layers: int = 2, seed: int = 0) -> ff.Flow:
    torch.manual_seed(seed)
    ts: list = []
    for _ in range(layers):
        ts += [T.LULinear(d), T.RationalQuadraticSpline(d, bins=6, bound=4.0)]
    return ff.Flow(ff.distributions.StandardNormal((d,)), ts)


def banana(x: torch.Tensor) -> torch.Tensor:
    # Normalized: x0 ~ N(0, 4), x1 | x0 ~ N(x0^2 / 4, 1); log Z = 0.
    return -0.5 * (x[:, 0] ** 2 / 4 + (x[:, 1] - 0.25 * x[:, 0] ** 2) ** 2) - math.log(4 * math.pi)


# -- maximum likelihood -------------------------------------------------------------------------
def test_fit_lowers_nll_and_history_is_json():
    data = generate("moons", 3000, seed=0)
    test = generate("moons", 1000, seed=1)
    flow = spline_flow()
    h = ff.fit(flow, data, steps=300, lr=1e-2, progress=False)
    nll = -flow.log_prob(test).mean().item()
    # A standard normal fitted to the moons' mean and covariance scores about 3.1 nats.
    assert nll < 2.8, nll
    assert h["val_loss"][-1] < h["val_loss"][0] - 0.3
    assert h.summary["best_step"] is not None and not h.summary["stopped_early"]
    restored = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert restored["loss"] == h["loss"] and restored.summary == h.summary


def test_the_fused_adam_of_fit_makes_torchs_default_update():
    from flowforge.train.engine import _adam

    flow = spline_flow(seed=3)
    twin = spline_flow(seed=3)
    x = generate("moons", 256, seed=0)
    fused = _adam(list(flow.parameters()), lr=1e-2, weight_decay=1e-3)
    plain = torch.optim.Adam(twin.parameters(), lr=1e-2, weight_decay=1e-3)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(25):
        for f, opt in ((flow, fused), (twin, plain)):
            opt.zero_grad()
            (-f.log_prob(x).mean()).backward()
            opt.step()
    for p, q in zip(flow.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    # Checkpoints of runs made with the default update resume with the fused one.
    fused.load_state_dict(plain.state_dict())
    loaded, saved = fused.state_dict()["state"], plain.state_dict()["state"]
    assert all(torch.equal(loaded[i]["exp_avg"], s["exp_avg"]) for i, s in saved.items())


def _compiled_and_eager(steps: int, data: torch.Tensor | None = None, **options) -> dict:
    data = generate("moons", 1000, seed=0) if data is None else data
    out = {}
    for compile in (False, True):
        torch.manual_seed(0)
        flow = models.MAF(2, transforms=2, hidden=(16,))
        h = ff.fit(flow, data, steps=steps, batch_size=100, progress=False, compile=compile, **options)
        out[compile] = (h, flow)
    return out


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile's CPU backend needs a C++ compiler",
)
def test_fit_compile_trains_the_compiled_step_with_eager_results():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        runs = _compiled_and_eager(12)
    toolchain = [str(w.message) for w in caught if "Cxx" in str(w.message) or "CppCompile" in str(w.message)]
    if toolchain:  # the machine's C++ toolchain, not flowforge: the fallback itself is tested below
        pytest.skip(f"torch.compile cannot build C++ kernels here: {toolchain[0]}")
    (compiled, flow_c), (eager, flow_e) = runs[True], runs[False]
    assert compiled.summary["compiled"] is True and "compiled" not in eager.summary
    assert compiled["loss"] == pytest.approx(eager["loss"], abs=1e-4)
    x = generate("moons", 200, seed=5)
    torch.testing.assert_close(flow_c.log_prob(x), flow_e.log_prob(x), atol=1e-4, rtol=1e-4)
    # A non-finite loss in a compiled step rolls back and is explained as in an eager one.
    data = generate("moons", 1000, seed=0)
    data[17] = 1e20
    runs = _compiled_and_eager(12, data, standardize=False, max_rollbacks=50)
    messages = {c: [e["message"] for e in h.events if e["kind"] == "rollback"] for c, (h, _) in runs.items()}
    assert runs[True][0].summary["compiled"] is True
    assert messages[True] and messages[True] == messages[False]
    assert "data row(s) [17]" in messages[True][0]


def test_a_compiler_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(fn, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("no backend on this machine")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: no backend.*eagerly"):
        runs = _compiled_and_eager(6)
    assert runs[True][0].summary["compiled"] is False
    assert runs[True][0]["loss"] == runs[False][0]["loss"]


def test_every_compiled_loss_keeps_its_own_graphs_past_torchs_recompile_limit(monkeypatch):
    # Dynamo caches graphs per code object, at most 8; fit builds every loss from one closure, so
    # from the ninth architecture in a process torch ran the loss eagerly while fit said compiled.
    from torch._dynamo.utils import counters

    from flowforge.train.compiled import compiled_loss

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **_: real(fn, backend="eager", dynamic=False))
    torch._dynamo.reset()
    counters.clear()

    def loss_of(flow):
        return lambda x, context: -flow.log_prob(x).mean()

    x = torch.randn(16, 2)
    for i in range(10):
        flow = models.MAF(2, transforms=1, hidden=(4 + i,))
        step = compiled_loss(loss_of(flow), device=torch.device("cpu"))
        for _ in range(2):  # the first call is eager, the second compiles
            step(x, None)
        assert step.state == "compiled"
    assert counters["stats"]["unique_graphs"] == 10
    torch._dynamo.reset()


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile's CPU backend needs a C++ compiler",
)
def test_fit_vi_compile_runs_the_compiled_generative_pass_with_eager_results():
    runs = {}
    for compile in (False, True):
        flow = spline_flow(layers=1, seed=4)
        runs[compile] = ff.fit_vi(flow, banana, steps=12, samples=64, progress=False, compile=compile, seed=0)
    assert runs[True].summary["compiled"] is True and "compiled" not in runs[False].summary
    assert runs[True]["elbo"] == pytest.approx(runs[False]["elbo"], abs=1e-4)


def test_standardizer_reports_raw_units():
    torch.manual_seed(1)
    mean, scale = torch.tensor([100.0, -3.0]), torch.tensor([50.0, 0.01])
    data = mean + scale * torch.randn(2000, 2, dtype=torch.float64)
    flow = spline_flow().double()
    ff.fit(flow, data, steps=30, progress=False, val_fraction=0.0)
    std = flow.transform.transforms[-1]
    assert isinstance(std, T.Standardize)
    torch.testing.assert_close(std.mean, data.mean(0))
    torch.testing.assert_close(std.std, data.std(0, correction=0))
    inner = ff.Flow(flow.base, list(flow.transform.transforms)[:-1])
    x = data[:50]
    expected = inner.log_prob((x - std.mean) / std.std) - std.std.log().sum()
    torch.testing.assert_close(flow.log_prob(x), expected)
    # A second fit keeps the fitted standardizer instead of stacking another one.
    ff.fit(flow, data * 2, steps=2, progress=False, val_fraction=0.0)
    assert sum(isinstance(t, T.Standardize) for t in flow.transform.transforms) == 1


def test_constant_column_is_not_divided_by_zero():
    data = torch.randn(500, 2)
    data[:, 1] = 7.0
    flow = spline_flow()
    h = ff.fit(flow, data, steps=20, progress=False)
    assert h.events[0]["kind"] == "constant_features"
    std = flow.transform.transforms[-1]
    assert std.std[1].item() == 1.0 and torch.isfinite(flow.log_prob(data[:5])).all()


def test_bad_data_is_refused_with_clear_errors():
    flow = spline_flow()
    bad = torch.randn(100, 2)
    bad[3, 1] = math.nan
    with pytest.raises(DataError, match=r"row 3, column 1"):
        ff.fit(flow, bad, steps=2, progress=False)
    with pytest.raises(ff.ShapeError, match=r"\(n, 2\).*\(100, 3\)"):
        ff.fit(flow, torch.randn(100, 3), steps=2, progress=False)


def test_nonfinite_loss_rolls_back_and_halves_lr():
    data = generate("moons", 1000, seed=0)
    data[17] = 1e20  # its log-density overflows to -inf in float32: an infinite loss
    flow = spline_flow()
    h = ff.fit(flow, data, steps=120, batch_size=32, standardize=False, progress=False, max_rollbacks=50)
    rollbacks = [e for e in h.events if e["kind"] == "rollback"]
    assert rollbacks and h.summary["rollbacks"] == len(rollbacks)
    assert "data row(s) [17]" in rollbacks[0]["message"] and "halved" in rollbacks[0]["message"]
    assert all(torch.isfinite(p).all() for p in flow.parameters())
    assert h["lr"][-1] < h["lr"][0] * 0.5 ** len(rollbacks) + 1e-12
    with pytest.raises(TrainingDivergedError, match=r"1 rollback\(s\)"):
        ff.fit(
            spline_flow(), data, steps=120, batch_size=32, standardize=False, progress=False, max_rollbacks=1
        )


def test_early_stopping_restores_best_weights():
    data = generate("moons", 300, seed=0)
    flow = spline_flow()
    h = ff.fit(flow, data, steps=600, lr=3e-2, eval_every=5, patience=3, progress=False)
    assert h.summary["stopped_early"] and len(h) < 600
    best = min(h["val_loss"])
    assert h.summary["best_val_loss"] == pytest.approx(best)
    val = ff.train.evaluate(flow, data[torch.randperm(300, generator=torch.Generator().manual_seed(0))[:30]])
    assert val == pytest.approx(best, rel=1e-5)


# -- variational inference ----------------------------------------------------------------------
def test_fit_vi_reaches_the_banana():
    flow = spline_flow(layers=3)
    h = ff.fit_vi(flow, banana, steps=500, samples=128, lr=5e-3, progress=False)
    # log Z = 0, so the ELBO is minus KL(q || p): close to 0 means a close fit.
    assert -0.25 < h.summary["final_elbo"] <= 0.02
    assert h["elbo"][-1] > h["elbo"][0] + 0.3
    assert h.summary["nonfinite_total"] == 0 and h.summary["rollbacks"] == 0


def test_fit_vi_survives_nan_and_minus_inf_targets():
    def cut(x):
        lp = banana(x)
        lp = torch.where(x[:, 0] > 1.5, torch.full_like(lp, -math.inf), lp)
        return torch.where(x[:, 1] < -2, torch.full_like(lp, math.nan), lp)

    flow = spline_flow(layers=3)
    h = ff.fit_vi(flow, cut, steps=200, samples=128, lr=5e-3, progress=False, iw=2, anneal=(0.1, 50))
    assert h.summary["nonfinite_total"] > 0 and h.summary["rollbacks"] == 0
    assert all(math.isfinite(v) for v in h["loss"] + h["elbo"] + h["iw_bound"])
    # The score-function push keeps q out of the undefined region.
    assert sum(h["nonfinite"][-50:]) / (50 * 256) < 0.05
    assert h["beta"][0] == pytest.approx(0.1) and h["beta"][-1] == 1.0


def test_fit_vi_target_errors_are_clear():
    with pytest.raises(ff.ShapeError, match=r"returned shape \(16, 1\).*expected \(16,\)"):
        ff.fit_vi(spline_flow(), lambda x: banana(x)[:, None], steps=1, samples=16, progress=False)
    with pytest.raises(TargetError, match="raised ZeroDivisionError"):
        ff.fit_vi(spline_flow(), lambda x: 1 / 0, steps=1, samples=16, progress=False)
    with pytest.raises(TargetError, match="returned a ndarray"):
        ff.fit_vi(spline_flow(), lambda x: banana(x).detach().numpy(), steps=1, samples=16, progress=False)
    with pytest.raises(TrainingDivergedError, match="16 of the samples had a NaN"):
        ff.fit_vi(spline_flow(), lambda x: banana(x) * math.nan, steps=10, samples=16, progress=False)


# -- checkpoints ----------------------------------------------------------------------------------
def test_sigint_saves_and_resume_matches_uninterrupted(tmp_path):
    calls = {"n": 0}

    def interrupting(x):
        calls["n"] += 1
        if calls["n"] == 23:
            os.kill(os.getpid(), signal.SIGINT)
        return banana(x)

    kwargs = dict(steps=40, samples=32, lr=5e-3, progress=False, checkpoint_every=10)
    reference = spline_flow()
    ff.fit_vi(reference, banana, **kwargs)
    flow = spline_flow()
    with pytest.raises(KeyboardInterrupt):
        ff.fit_vi(flow, interrupting, checkpoint_dir=tmp_path, **kwargs)
    assert load_checkpoint(tmp_path)["step"] == 23
    resumed = spline_flow(seed=5)  # other initial weights: all state must come from the checkpoint
    h = ff.fit_vi(resumed, interrupting, checkpoint_dir=tmp_path, resume=True, **kwargs)
    assert [e["kind"] for e in h.events] == ["resumed"]
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_another_runs_checkpoint(tmp_path):
    data = generate("moons", 200, seed=0)
    ff.fit(spline_flow(), data, steps=10, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0.001, now 0.002"):
        ff.fit(spline_flow(), data, steps=10, lr=2e-3, progress=False, checkpoint_dir=tmp_path, resume=True)


def test_resume_refuses_a_checkpoint_of_another_architecture_with_the_same_shapes(tmp_path):
    # Same parameter shapes, other maps: a state dict would load and silently change the model.
    data = generate("moons", 200, seed=0)
    kwargs = dict(steps=10, progress=False, checkpoint_dir=tmp_path)
    ff.fit(models.RealNVP(2, transforms=2, hidden=(8,)), data, **kwargs)
    for other in (
        models.RealNVP(2, transforms=2, hidden=(8,), shift_first=False),
        models.RealNVP(2, transforms=2, hidden=(8,), activation="tanh"),
    ):
        with pytest.raises(CheckpointError, match=r"model's layers .* differ from the checkpoint's"):
            ff.fit(other, data, resume=True, **kwargs)
    h = ff.fit(models.RealNVP(2, transforms=2, hidden=(8,)), data, resume=True, **kwargs)
    assert "resumed" in [e["kind"] for e in h.events]


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, {"step": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


SCRIPT = """
import sys, torch, flowforge as ff
from flowforge import models
from flowforge import transforms as T
from flowforge.datasets import generate

torch.set_num_threads(1)
torch.manual_seed(0)
ts = []
for _ in range(2):
    ts += [T.LULinear(2), T.RationalQuadraticSpline(2, bins=6, bound=4.0)]
flow = ff.Flow(ff.distributions.StandardNormal((2,)), ts)
ckpt = sys.argv[1] if sys.argv[1] != "-" else None
ff.fit(flow, generate("moons", 2000, seed=0), steps=400, batch_size=64, progress=False,
       checkpoint_dir=ckpt, checkpoint_every=10, resume=ckpt is not None, eval_every=25)
torch.save(flow.state_dict(), sys.argv[2])
"""


def test_kill_9_and_resume_reaches_the_same_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    ckpt = tmp_path / "ckpt"
    reference = subprocess.Popen([sys.executable, str(script), "-", str(tmp_path / "reference.pt")])
    victim = subprocess.Popen([sys.executable, str(script), str(ckpt), str(tmp_path / "never.pt")])
    deadline = time.time() + 120
    while not (ckpt / "checkpoint.pt").exists():
        assert victim.poll() is None, "the training process ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    state = load_checkpoint(ckpt)
    assert not state["finished"] and 10 <= state["step"] < 400, state["step"]
    resumed = subprocess.run(
        [sys.executable, str(script), str(ckpt), str(tmp_path / "resumed.pt")], timeout=120
    )
    assert resumed.returncode == 0
    assert reference.wait(timeout=120) == 0
    a = torch.load(tmp_path / "reference.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not Path(tmp_path / "never.pt").exists()
