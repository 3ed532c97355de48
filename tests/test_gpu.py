"""GPU correctness (issue 9): models, training, compiled steps and bf16 on a CUDA device.

Skipped without CUDA (CI has none). ``FLOWFORGE_TEST_DEVICE=cpu`` runs the same checks on the
CPU, which is how their logic is kept working between sessions that have a GPU; run them on a
GPU with ``python -m pytest -q tests/test_gpu.py`` there (``bench/README.md`` has the command
used on the device machine).
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch

import flowforge as ff
from flowforge import models
from flowforge.datasets import generate

DEVICE = os.environ.get("FLOWFORGE_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
)

BUILDERS = {
    "MAF": lambda: models.MAF(4, transforms=3, hidden=(32, 32)),
    "IAF": lambda: models.IAF(4, transforms=3, hidden=(32, 32)),
    "RealNVP": lambda: models.RealNVP(4, transforms=4, hidden=(32, 32)),
    "NSF-AR": lambda: models.NSF(4, kind="autoregressive", transforms=2, hidden=(32,)),
    "NSF-C": lambda: models.NSF(4, kind="coupling", transforms=2, hidden=(32,)),
    "Glow": lambda: models.Glow((1, 8, 8), levels=2, steps=2, hidden=(16, 16)),
}


def _event(flow: ff.Flow) -> tuple[int, ...]:
    return tuple(flow.event_shape)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_model_on_the_device_computes_what_it_computes_on_the_cpu(name):
    torch.manual_seed(0)
    cpu = BUILDERS[name]()
    x = torch.rand(64, *_event(cpu)) if name == "Glow" else torch.randn(64, *_event(cpu))
    cpu.log_prob(x)  # data-dependent initialisations (ActNorm) happen on the CPU copy first
    dev = copy.deepcopy(cpu).to(DEVICE)
    with torch.no_grad():
        expected = cpu.log_prob(x)
        got = dev.log_prob(x.to(DEVICE))
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-4)
        z, ladj = dev.transform.inverse(x.to(DEVICE))
        back, ladj_back = dev.transform(z)
        torch.testing.assert_close(back.cpu(), x, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ladj_back, -ladj, rtol=1e-4, atol=1e-4)
        samples = dev.sample((32,))
    assert samples.device.type == torch.device(DEVICE).type and torch.isfinite(samples).all()


def test_fit_on_the_device_trains_checkpoints_and_resumes(tmp_path):
    data = generate("moons", 2000, seed=0)
    torch.manual_seed(0)
    flow = models.MAF(2, transforms=3, hidden=(32, 32))
    options = dict(steps=60, batch_size=256, device=DEVICE, progress=False, checkpoint_dir=tmp_path)
    h = ff.fit(flow, data, **options)
    assert next(flow.parameters()).device.type == torch.device(DEVICE).type
    assert h["val_loss"][-1] < h["val_loss"][0]
    again = ff.fit(
        flow,
        data,
        steps=60,
        batch_size=256,
        device=DEVICE,
        progress=False,
        checkpoint_dir=tmp_path,
        resume=True,
    )
    assert again.summary["steps"] == 60 and len(again) == len(h)


def test_fit_compile_on_the_device_matches_eager():
    data = generate("moons", 2000, seed=0)
    runs = {}
    for compile in (False, True):
        torch.manual_seed(0)
        flow = models.RealNVP(2, transforms=4, hidden=(32, 32))
        runs[compile] = ff.fit(
            flow, data, steps=20, batch_size=256, device=DEVICE, progress=False, compile=compile, seed=0
        )
    assert runs[True].summary["compiled"] is True
    # CUDA graphs and fused kernels reorder float sums: equal to rounding, not bit for bit.
    assert runs[True]["loss"] == pytest.approx(runs[False]["loss"], abs=1e-3)


def test_bf16_conditioners_on_the_device_train_to_a_close_loss():
    data = generate("moons", 2000, seed=0)
    losses = {}
    for precision in (None, "bf16"):
        torch.manual_seed(0)
        flow = models.MAF(2, transforms=3, hidden=(32, 32))
        h = ff.fit(
            flow,
            data,
            steps=100,
            batch_size=256,
            device=DEVICE,
            progress=False,
            mixed_precision=precision,
            seed=0,
        )
        losses[precision] = h["val_loss"][-1]
    assert abs(losses["bf16"] - losses[None]) < 0.05, losses


def test_the_speed_harness_runs_on_the_device(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import speed

    out = tmp_path / "speed.json"
    options = ["--quick", "--libraries", "flowforge", "--models", "MAF,RealNVP", "--compile", "--no-memory"]
    speed.main(["--device", DEVICE, *options, "--json", str(out)])
    assert "flowforge-compiled" in capsys.readouterr().out
    assert out.is_file()
