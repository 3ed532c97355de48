"""Speed options of issue 9: bf16 conditioners (float32 log-determinants) and the permutation gather."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge import models
from flowforge import transforms as T
from flowforge.nets.precision import conditioner_precision
from flowforge.transforms._permute import permute_last


def _moons(n: int = 512) -> torch.Tensor:
    from flowforge.datasets import generate

    return generate("moons", n, seed=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.MAF(2, transforms=2, hidden=(16, 16)),
        lambda: models.RealNVP(2, transforms=2, hidden=(16, 16)),
        lambda: models.NSF(2, kind="autoregressive", transforms=1, hidden=(16,)),
    ],
)
def test_bf16_conditioners_keep_float32_log_det(build):
    torch.manual_seed(0)
    flow = build()
    for p in flow.parameters():  # away from the identity start, so the conditioners matter
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(64, 2)
    exact = flow.log_prob(x)
    with conditioner_precision("bf16"):
        mixed = flow.log_prob(x)
        z = flow.sample((8,))
    assert mixed.dtype == torch.float32 and z.dtype == torch.float32
    diff = (mixed - exact).abs()
    # bf16 keeps 8 significant bits: the log-densities move by about 1e-3 nats, not more.
    assert 0 < diff.mean().item() < 0.01 and diff.max().item() < 0.1, diff


def test_fit_bf16_nll_close_to_float32():
    data = _moons()
    runs = {}
    for precision in (None, "bf16"):
        torch.manual_seed(0)
        flow = models.MAF(2, transforms=2, hidden=(16, 16))
        history = ff.fit(
            flow, data, steps=60, batch_size=128, lr=5e-3, progress=False, mixed_precision=precision, seed=0
        )
        runs[precision] = history["val_loss"][-1]
    assert runs[None] != runs["bf16"]
    assert abs(runs[None] - runs["bf16"]) < 0.1, runs


def test_mixed_precision_rejects_unknown():
    with pytest.raises(ValueError, match="mixed_precision"):
        ff.fit(
            models.MAF(2, transforms=1, hidden=(4,)),
            _moons(64),
            steps=1,
            mixed_precision="fp8",
            progress=False,
        )


def test_permute_last_gradients_match_indexing():
    torch.manual_seed(0)
    perm = torch.randperm(5)
    x = torch.randn(3, 4, 5, dtype=torch.double, requires_grad=True)
    out = permute_last(x, perm, torch.argsort(perm))
    assert torch.equal(out, x[..., perm])
    assert torch.autograd.gradcheck(lambda v: permute_last(v, perm, torch.argsort(perm)), (x,))
    assert torch.autograd.gradgradcheck(lambda v: permute_last(v, perm, torch.argsort(perm)) ** 2, (x,))


def test_permutation_layer_still_round_trips():
    t = T.Permutation(6, kind="random", seed=3)
    x = torch.randn(2, 3, 6)
    y, ladj = t(x)
    assert torch.equal(t.inverse(y)[0], x) and torch.equal(ladj, torch.zeros(2, 3))


def test_an_initialized_actnorm_does_not_break_a_compiled_graph(tmp_path):
    # fit(compile=True) traces the whole loss: a host read of ActNorm's flag in every layer would
    # split the graph at each of them (and recompile the shared frames per layer shape).
    import torch._dynamo

    from flowforge.settings import validation

    torch.manual_seed(0)
    flow = models.Glow((1, 4, 4), levels=1, steps=2, hidden=(8,))
    x = torch.rand(16, 1, 4, 4)
    flow.log_prob(x)  # the data-dependent initialisation, eagerly
    with validation(False):  # as fit(compile=True) runs its compiled steps
        explained = torch._dynamo.explain(lambda v: flow.log_prob(v))(x)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    # A loaded model is initialized: its first batch must not overwrite the loaded statistics.
    ff.save(flow, tmp_path / "glow")
    loaded = ff.load(tmp_path / "glow")
    loaded.train()
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    loaded.log_prob(torch.rand(16, 1, 4, 4) * 5)
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())
