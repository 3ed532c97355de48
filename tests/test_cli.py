"""The `flowforge` command line: outputs, run folders and exit codes (0, 1, 2, 130)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import flowforge as ff
from flowforge import experiments, models, targets
from flowforge import transforms as T
from flowforge.cli import main
from flowforge.datasets import load_file


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def gauss3(x: torch.Tensor) -> torch.Tensor:
    """An unnormalized standard normal in 3-D, for `module:function` targets."""
    return -0.5 * (x * x).sum(-1)


gauss3.dim = 3


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--steps",
                "60",
                "--n",
                "1500",
                "--out",
                str(out),
                "--no-progress",
                "--checkpoint-every",
                "25",
            ]
        )
    assert exit_info.value.code == 0
    return out


def test_fit_writes_a_complete_run_folder(fitted):
    for name in ("model/config.json", "model/model.safetensors", "metrics.json", "history.json", "report.md"):
        assert (fitted / name).is_file(), name
    figures = sorted(p.name for p in (fitted / "figures").iterdir())
    assert figures == ["density.png", "grid.png", "layers.png", "loss.png", "samples.png"]
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert metrics["data"] == "moons" and metrics["steps"] == 60 and np.isfinite(metrics["test_nll"])
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_nll"] / (2 * np.log(2)))
    html = (fitted / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert "figures/density.png" in (fitted / "report.md").read_text()
    assert ff.load(fitted).event_shape == (2,)


def test_compile_reaches_fit_vi_and_the_metrics(tmp_path, capsys, monkeypatch):
    # Compiling itself is tested in test_train.py; here a compiler that fails shows the switch arriving.
    def broken_compile(fn, **options):
        def compiled(*args, **kwargs):
            raise RuntimeError("compiler unavailable")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    args = ["fit", "--steps", "4", "--n", "400", "--out", tmp_path / "fit", "--no-progress", "--no-plots"]
    with pytest.warns(RuntimeWarning, match="compiler unavailable"):
        code, _, _ = run(capsys, *args, "--compile")
    assert code == 0
    assert json.loads((tmp_path / "fit" / "metrics.json").read_text())["compiled"] is False
    args = ["vi", "--target", "banana", "--steps", "4", "--samples", "16", "--out", tmp_path / "vi"]
    with pytest.warns(RuntimeWarning, match="compiler unavailable"):
        code, _, _ = run(capsys, *args, "--no-progress", "--no-plots", "--compile")
    assert code == 0
    assert json.loads((tmp_path / "vi" / "metrics.json").read_text())["compiled"] is False


def test_resume_of_a_finished_run_gives_the_same_model(fitted, capsys):
    before = json.loads((fitted / "metrics.json").read_text())
    code, out, _ = run(
        capsys, "fit", "--steps", "60", "--n", "1500", "--out", fitted, "--no-progress", "--resume"
    )
    assert code == 0
    after = json.loads((fitted / "metrics.json").read_text())
    assert after["test_nll"] == before["test_nll"] and "test NLL" in out


def test_sample_eval_check(fitted, tmp_path, capsys):
    code, out, _ = run(capsys, "sample", fitted, "-n", "7", "-o", tmp_path / "x.csv")
    assert code == 0 and "7 samples" in out
    x = load_file(tmp_path / "x.csv")
    assert x.shape == (7, 2)
    assert run(capsys, "sample", fitted, "-n", "3", "-o", tmp_path / "x.npy")[0] == 0
    assert np.load(tmp_path / "x.npy").shape == (3, 2)
    code, out, _ = run(capsys, "eval", fitted, "--data", tmp_path / "x.csv", "--per-row", tmp_path / "lp.npy")
    assert code == 0
    result = json.loads(out)
    per_row = np.load(tmp_path / "lp.npy")
    expected = ff.load(fitted).log_prob(x).detach().double().numpy()
    np.testing.assert_allclose(per_row, expected, rtol=1e-5)
    assert result["rows"] == 7 and result["mean_nll"] == pytest.approx(-expected.mean(), rel=1e-5)
    q = result["nll_quantiles"]
    assert q["0.5"] == pytest.approx(np.median(-expected), rel=1e-5)
    assert q["max"] == pytest.approx((-expected).max(), rel=1e-5)
    code, out, _ = run(capsys, "check", fitted, "--data", "moons", "-n", "40", "--jacobians", "5", "--strict")
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["jacobian_points"] == 5
    assert report["condition_number"]["min"] >= 1.0


def test_list_covers_the_live_registries(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    names = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    expected = set(T.__all__) - {"Transform"}
    expected |= set(models.__all__) | set(targets.TARGETS) | set(experiments.EXPERIMENTS)
    assert expected <= names, sorted(expected - names)
    assert run(capsys, "list", "bogus")[0] == 2


def test_vi_with_builtin_and_user_targets(tmp_path, capsys):
    args = ["--steps", "30", "--samples", "32", "--no-progress", "--no-plots"]
    code, out, _ = run(capsys, "vi", "--target", "banana", "--out", tmp_path / "a", *args)
    assert code == 0 and "final ELBO" in out
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["log_z"] == 0.0 and metrics["final_elbo"] < 0.05
    code, _, _ = run(capsys, "vi", "--target", "tests.test_cli:gauss3", "--out", tmp_path / "b", *args)
    assert code == 0 and json.loads((tmp_path / "b" / "metrics.json").read_text())["dim"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--steps", "abc"], "Invalid value for '--steps'"),
        (["fit", "--data", "nosuch"], "neither a built-in data set"),
        (["fit", "--model", "NoSuchModel", "--steps", "1"], "unknown model 'NoSuchModel'"),
        (["vi", "--target", "nosuch"], "unknown target 'nosuch'"),
        (["vi", "--target", "banana", "--anneal", "half"], "BETA0:STEPS"),
        (["sample", "{tmp}/none", "-n", "2"], "no saved model"),
        (["experiment", "nosuch"], "unknown experiment 'nosuch'"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0] in ("fit", "vi"):
        args += ["--out", str(tmp_path / "run")]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_data_file_exits_2(tmp_path, capsys):
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    code, _, err = run(capsys, "fit", "--data", tmp_path / "ragged.csv", "--out", tmp_path / "run")
    assert code == 2 and "ragged: line 2" in err


def test_internal_failure_exits_1_with_the_log(tmp_path, capsys, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("flowforge.train.runs.fit_run", boom)
    code, _, err = run(capsys, "fit", "--out", tmp_path)
    assert code == 1 and "boom" in err and str(tmp_path / "flowforge.log") in err
    assert "Traceback" in (tmp_path / "flowforge.log").read_text()


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, capsys, monkeypatch):
    import flowforge.train.ml as ml

    def interrupting_nll(flow, x, context=None, calls=[]):  # noqa: B006 - a call counter
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return -flow.log_prob(x, context).mean()

    monkeypatch.setattr(ml, "nll", interrupting_nll)
    code, _, err = run(capsys, "fit", "--steps", "50", "--n", "500", "--out", tmp_path, "--no-progress")
    assert code == 130
    assert "interrupted at step 5; checkpoint written" in err and err.strip().endswith(
        "flowforge: error: interrupted"
    )
    assert (tmp_path / "checkpoints" / "checkpoint.pt").is_file()


def test_experiment_dispatch(tmp_path, capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("flowforge.experiments._fake")
    fake.CLAIM = "A fake claim."
    fake.run = lambda **kwargs: calls.append(kwargs) or {}
    monkeypatch.setitem(sys.modules, "flowforge.experiments._fake", fake)
    monkeypatch.setitem(experiments.EXPERIMENTS, "fake", "_fake")
    code, _, _ = run(capsys, "experiment", "fake", "--quick", "--out", tmp_path, "--seed", "3")
    assert code == 0 and calls == [{"quick": True, "out": tmp_path, "seed": 3}]
    assert "A fake claim." in run(capsys, "list", "experiments")[1]


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "flowforge", "fit", "--steps", "-3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--steps" in proc.stderr and "Traceback" not in proc.stderr
