"""MADE's autoregressive property, MAF/IAF duality, the sequential direction, and a short MAF fit."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import flowforge as ff
from flowforge import models
from flowforge import transforms as T
from flowforge.datasets import generate
from flowforge.errors import ShapeError
from flowforge.nets import MADE


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _made_jacobian(net: MADE, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """``|d out[i, q] / d x[j]|`` summed over ``q`` and over the rows of ``x``: shape ``(d, d)``."""
    total = torch.zeros(net.features, net.features, dtype=x.dtype)
    for k in range(x.shape[0]):
        c = None if context is None else context[k]
        jac = torch.autograd.functional.jacobian(lambda v, c=c: net(v, c), x[k])  # (d, P, d)
        total += jac.abs().sum(1)
    return total


@pytest.mark.parametrize(
    ("ordering", "context"),
    [("natural", None), ("random", None), ("random", 2), ((2, 0, 3, 1, 4), None)],
    ids=["natural", "random", "random-context", "explicit"],
)
def test_made_outputs_depend_exactly_on_earlier_features(ordering, context):
    torch.manual_seed(0)
    d = 5
    net = MADE(d, 3, hidden=(12, 12), context_features=context, ordering=ordering, seed=4, activation="tanh")
    net = net.double()
    _perturb(net)
    x = torch.randn(4, d, dtype=torch.float64)
    c = None if context is None else torch.randn(4, context, dtype=torch.float64)
    jac = _made_jacobian(net, x, c)
    earlier = net.degrees[None, :] < net.degrees[:, None]  # [i, j]: j comes before i
    assert sorted(net.degrees.tolist()) == list(range(1, d + 1))
    # Forbidden entries are exactly zero; every allowed one is used (hidden layers wider than d).
    assert jac[~earlier].abs().max() == 0
    assert (jac[earlier] > 1e-8).all()
    assert torch.equal(net.dependencies(), earlier)
    if ordering == "natural":
        assert net.degrees.tolist() == [1, 2, 3, 4, 5]
    if isinstance(ordering, tuple):
        assert [int(torch.nonzero(net.degrees == k + 1)) for k in range(d)] == list(ordering)


def test_made_random_ordering_is_seeded():
    a, b, c = (MADE(8, ordering="random", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.degrees, b.degrees)
    assert not torch.equal(a.degrees, c.degrees)


def test_made_context_reaches_every_feature():
    torch.manual_seed(1)
    net = MADE(4, 2, hidden=(16,), context_features=3).double()
    _perturb(net)
    x = torch.randn(4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda c: net(x, c), torch.randn(3, dtype=torch.float64))
    assert (jac.abs().sum((1, 2)) > 1e-8).all()  # the first feature's parameters too


def test_narrow_made_stays_autoregressive_with_fewer_passes():
    torch.manual_seed(2)
    net = MADE(6, 2, hidden=(2, 2), ordering="random", seed=0, activation="tanh").double()
    _perturb(net)
    jac = _made_jacobian(net, torch.randn(3, 6, dtype=torch.float64))
    earlier = net.degrees[None, :] < net.degrees[:, None]
    assert jac[~earlier].abs().max() == 0
    assert net.passes < 6
    assert torch.equal(jac > 0, net.dependencies())


def _matmul_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    ("hidden", "context", "levels"),
    [((32, 32), None, 6), ((2,), None, 3), ((16, 8), 3, 6)],
    ids=["full", "narrow", "context"],
)
def test_sequential_direction_costs_one_made_pass(hidden, context, levels):
    torch.manual_seed(3)
    d = 6
    maf = T.MaskedAffineAutoregressive(d, hidden=hidden, ordering="random", context_features=context).double()
    _perturb(maf)
    z = torch.randn(7, d, dtype=torch.float64)
    c = None if context is None else torch.randn(7, context, dtype=torch.float64)
    assert maf.made.passes == levels
    # Every hidden unit is computed at most once over all levels ...
    for i, counts in enumerate(maf.made.schedule()):
        units = getattr(maf.made, f"units{i}")
        assert sum(counts) == len(units) == len(set(units.tolist())) <= hidden[i]
    # ... so the d sequential steps do no more matrix arithmetic than one pass of the MADE.
    one_pass = _matmul_flops(lambda: maf.made(z, c))
    assert 0 < _matmul_flops(lambda: maf(z, c)) <= one_pass
    x, ladj = maf(z, c)
    z2, back = maf.inverse(x, c)
    torch.testing.assert_close(z2, z, rtol=0, atol=1e-10)
    torch.testing.assert_close(back, -ladj, rtol=0, atol=1e-10)


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_sequential_direction_under_autograd_keeps_memory_linear_in_d():
    # An IAF's density by maximum likelihood: autograd through d sequential steps. Keeping each
    # step's growing prefix of activations would make the saved memory quadratic in d.
    saved = {}
    for d in (16, 64):
        torch.manual_seed(0)
        iaf = T.InverseAutoregressive(d, hidden=(64, 64))
        _perturb(iaf)
        y = torch.randn(32, d)
        saved[d] = _saved_bytes(lambda iaf=iaf, y=y: iaf.inverse(y)[1].sum().backward())
        one_pass = _saved_bytes(lambda iaf=iaf, y=y: iaf(y)[1].sum().backward())
        assert saved[d] < 4 * one_pass, (d, saved[d], one_pass)
    assert saved[64] < 2.5 * saved[16], saved  # 4x the features: about 4x with 2x margin, not 16x


@pytest.mark.parametrize("context", [None, 2], ids=["plain", "context"])
def test_maf_and_iaf_are_inverses_on_the_same_parameters(context):
    torch.manual_seed(4)
    options = {"hidden": (16, 16), "ordering": "random", "seed": 5, "context_features": context}
    maf = T.MaskedAffineAutoregressive(4, **options).double()
    _perturb(maf)
    iaf = T.InverseAutoregressive(4, **options).double()
    iaf.load_state_dict(maf.state_dict())
    v = torch.randn(6, 4, dtype=torch.float64)
    c = None if context is None else torch.randn(6, context, dtype=torch.float64)
    for (a, la), (b, lb) in [(iaf(v, c), maf.inverse(v, c)), (iaf.inverse(v, c), maf(v, c))]:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        torch.testing.assert_close(la, lb, rtol=0, atol=1e-12)
    assert (maf.cheap_direction, iaf.cheap_direction) == ("inverse", "forward")
    # And the sequential direction of one undoes the one-pass direction of the other.
    torch.testing.assert_close(maf(iaf(v, c)[0], c)[0], v, rtol=0, atol=1e-10)


def test_iaf_model_with_the_maf_layers_reversed_is_the_inverse_map():
    torch.manual_seed(5)
    # The same transformer in both (MAF's default bound is (3, 1), IAF's 3).
    maf = models.MAF(3, transforms=3, hidden=(16,)).double()
    _perturb(maf, 0.2)
    iaf = models.IAF(3, transforms=3, hidden=(16,), scale_bound=(3.0, 1.0)).double()
    maf_layers = [t for t in maf.transform if isinstance(t, T.Autoregressive)]
    iaf_layers = [t for t in iaf.transform if isinstance(t, T.Autoregressive)]
    for a, b in zip(reversed(maf_layers), iaf_layers):
        b.load_state_dict(a.state_dict())
    # Reversals are their own inverses, so IAF's forward stack is MAF's inverse stack.
    v = torch.randn(5, 3, dtype=torch.float64)
    (a, la), (b, lb) = iaf.transform(v), maf.transform.inverse(v)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-12)


def test_flow_sampling_matches_its_density():
    torch.manual_seed(6)
    for flow in (models.MAF(3, transforms=2, hidden=(16,)), models.IAF(3, transforms=2, hidden=(16,))):
        flow = flow.double()
        _perturb(flow, 0.2)
        x, log_p = flow.rsample_and_log_prob((8,))
        torch.testing.assert_close(flow.log_prob(x), log_p, rtol=0, atol=1e-9)


def test_conditional_models_sample_and_score_per_context():
    torch.manual_seed(8)
    c = torch.randn(3, 2, dtype=torch.float64)
    for builder in (models.MAF, models.IAF):
        flow = builder(4, transforms=2, hidden=(16,), context_features=2, permutation="random").double()
        _perturb(flow, 0.2)
        x, log_p = flow.rsample_and_log_prob((5,), context=c)
        assert x.shape == (5, 3, 4) and log_p.shape == (5, 3)
        torch.testing.assert_close(flow.log_prob(x, c), log_p, rtol=0, atol=1e-9)
        # The context matters: the same points score differently under another context.
        assert (flow.log_prob(x, c.flip(0)) - log_p).abs().max() > 1e-3


def test_batch_shapes_broadcast_with_the_context():
    torch.manual_seed(7)
    t = T.MaskedSplineAutoregressive(3, bins=4, bound=3.0, hidden=(8,), context_features=2).double()
    _perturb(t)
    x = torch.randn(4, 3, dtype=torch.float64)
    c = torch.randn(5, 1, 2, dtype=torch.float64)
    y, ladj = t(x, c)
    assert y.shape == (5, 4, 3) and ladj.shape == (5, 4)
    back, ladj_back = t.inverse(y, c)
    torch.testing.assert_close(back, x.expand(5, 4, 3), rtol=0, atol=1e-10)
    torch.testing.assert_close(ladj_back, -ladj, rtol=0, atol=1e-10)


def test_errors_name_what_was_wrong():
    with pytest.raises(ValueError, match="ordering"):
        MADE(3, ordering="sideways")
    with pytest.raises(ValueError, match=r"permutation of 0\.\.2"):
        MADE(3, ordering=[0, 0, 1])
    with pytest.raises(ValueError, match="one_pass"):
        T.Autoregressive(T.transformers.AffineTransformer(), 3, one_pass="both")
    with pytest.raises(ShapeError, match=r"\(\.\.\., 3\).*\(2, 4\)"):
        MADE(3)(torch.randn(2, 4))
    with pytest.raises(ShapeError, match="context"):
        MADE(3, context_features=2)(torch.randn(3))
    with pytest.raises(ValueError, match="permutation"):
        models.MAF(2, permutation="shuffle")


def test_short_maf_fit_lowers_the_nll():
    torch.manual_seed(0)
    data = generate("moons", 3000, seed=0)
    train, test = data[:2000], data[2000:]
    flow = models.MAF(2, transforms=3, hidden=(32, 32))
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    with torch.no_grad():
        before = -flow.log_prob(test).mean().item()
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (256,), generator=g)]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -flow.log_prob(test).mean().item()
    # Measured with seeds 0-4 (model and data): 3.75-3.90 -> 2.41-2.50 nats, a drop of 1.25 at least.
    assert after < before - 0.8, (before, after)
    assert ff.check_transform(flow.transform.double(), test[:5].double()).passed


def test_maf_density_direction_stretches_at_most_e_per_layer():
    # MAF's log-scale acts on the density side; its default bound (3, 1) caps the stretch there,
    # where the symmetric bound 3 lets the same perturbed layer stretch by up to e^3 per entry.
    x = 50 * torch.randn(4000, 3)
    most = {}
    for bound in ((3.0, 1.0), 3.0):
        torch.manual_seed(0)
        flow = models.MAF(3, transforms=1, hidden=(16,), scale_bound=bound)
        layer = flow.transform.transforms[0]
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(20.0 * torch.randn_like(p))
            layer.made.layers[-1].bias.add_(1000.0)  # every raw log-scale far above its bound
            _, ladj = layer.inverse(x)
        most[bound] = float(ladj.max())
        assert float(ladj.min()) >= -3 * 3.0
    assert most[(3.0, 1.0)] <= 3 * 1.0 < most[3.0]
    assert models.MAF(3).transform.transforms[0].transformer.scale_bound == (3.0, 1.0)
