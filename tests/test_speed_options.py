"""Speed options of issue 9: bf16 conditioners (float32 log-determinants), the permutation gather, memory."""

from __future__ import annotations

import math

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


def _saved_batch_tensors(fn, x: torch.Tensor) -> int:
    """How many distinct tensors of ``x``'s size autograd keeps for backward of ``fn(x)``."""
    storages = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() == x.numel():
            storages.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return len(storages)


@pytest.mark.parametrize("bound", [3.0, (1.0, 3.0), (3.0, 1.0)])
@pytest.mark.parametrize("rows", [8, 8192])
def test_bounded_log_scale_matches_tanh_on_every_path(bound, rows):
    # Large batches go through a custom autograd function keeping one tensor for backward, where
    # autograd's own graph of b * tanh(raw / b) keeps the per-element bound too (RealNVP's peak
    # memory at 784:1024:1024, issue 9); small ones through the plain ops.
    tr = T.transformers.AffineTransformer(scale_bound=bound)
    raw = (torch.randn(rows, 8, dtype=torch.double) * 3).requires_grad_()
    if rows * 8 >= 1 << 15:
        assert _saved_batch_tensors(tr.log_scale, raw) == 1
    lower, upper = (bound, bound) if isinstance(bound, float) else bound
    b = torch.where(raw > 0, upper, lower).double()
    ref = b * torch.tanh(raw / b)
    s = tr.log_scale(raw)
    assert torch.allclose(s, ref, atol=1e-12)
    (g,) = torch.autograd.grad(s.sum(), raw)
    (g_ref,) = torch.autograd.grad(ref.sum(), raw)
    assert torch.allclose(g, g_ref, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(tr.log_scale(raw), s)  # the sampling path computes the same numbers
    edges = torch.tensor([math.inf, -math.inf, 0.0], dtype=torch.double).repeat(rows * 8 // 3 + 1)
    assert torch.equal(tr.log_scale(edges)[:3], torch.tensor([upper, -lower, 0.0], dtype=torch.double))
    # The backward is differentiable again (Hessians through an affine layer stay right).
    few = raw[:1, :4].detach().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda v: (tr.log_scale(v.repeat(rows * 2, 1)) ** 3).sum(), (few,))


def test_standard_normal_log_prob_keeps_only_its_input():
    z = torch.randn(32, 6, requires_grad=True)
    base = ff.distributions.StandardNormal((6,))
    assert _saved_batch_tensors(base.log_prob, z) == 1
    (g,) = torch.autograd.grad(base.log_prob(z).sum(), z)
    assert torch.allclose(g, -z)


COMPILED_MODELS = {
    "MAF": (lambda: models.MAF(4, transforms=2, hidden=(16,)), (4,)),
    "IAF": (lambda: models.IAF(4, transforms=2, hidden=(16,)), (4,)),
    "NICE": (lambda: models.NICE(4, transforms=2, hidden=(16,)), (4,)),
    "RealNVP": (lambda: models.RealNVP(4, transforms=2, hidden=(16,)), (4,)),
    "NSF-AR": (lambda: models.NSF(4, kind="autoregressive", transforms=2, hidden=(16,)), (4,)),
    "NSF-C": (lambda: models.NSF(4, kind="coupling", transforms=2, hidden=(16,)), (4,)),
    "Glow": (lambda: models.Glow((1, 4, 4), levels=1, steps=2, hidden=(8,)), (1, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(COMPILED_MODELS))
def test_every_model_loss_traces_into_one_graph(name):
    # fit(compile=True) compiles the whole loss: a graph break (a host read such as ActNorm's flag,
    # a data-dependent branch) splits it and recompiles shared frames per layer shape.
    import torch._dynamo

    from flowforge.settings import validation

    build, shape = COMPILED_MODELS[name]
    torch.manual_seed(0)
    flow = build()
    x = torch.rand(16, *shape)
    flow.log_prob(x)  # data-dependent initialisations, eagerly (as fit's first step)
    with validation(False):  # as fit(compile=True) runs its compiled steps
        explained = torch._dynamo.explain(lambda v: -flow.log_prob(v).mean())(x)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]


def test_a_loaded_actnorm_keeps_its_statistics(tmp_path):
    torch.manual_seed(0)
    flow = models.Glow((1, 4, 4), levels=1, steps=2, hidden=(8,))
    flow.log_prob(torch.rand(16, 1, 4, 4))
    ff.save(flow, tmp_path / "glow")
    loaded = ff.load(tmp_path / "glow")
    loaded.train()
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    loaded.log_prob(torch.rand(16, 1, 4, 4) * 5)  # would re-initialize an uninitialized ActNorm
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())
