"""Coupling layers and masks: partitions, identity start, structure, the linear coupling's matrix."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge import models
from flowforge import transforms as T
from flowforge.transforms.masks import MASK_KINDS, as_mask, make_mask


def _perturb(module: torch.nn.Module, scale: float = 0.5) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks_split_every_event_into_two_complementary_parts(kind):
    shape = (3, 4, 5) if kind in ("checkerboard", "channel") else (7,)
    m = make_mask(kind, shape, seed=1)
    assert m.dtype == torch.bool and tuple(m.shape) == shape
    assert 0 < int(m.sum()) < m.numel()
    assert torch.equal(make_mask(kind, shape, flip=True, seed=1), ~m)


def test_mask_kinds_are_the_documented_partitions():
    assert make_mask("half", 5).tolist() == [True, True, True, False, False]
    assert make_mask("alternate", 4).tolist() == [True, False, True, False]
    checker = make_mask("checkerboard", (2, 2, 2))
    assert checker[0].tolist() == [[True, False], [False, True]] and torch.equal(checker[0], checker[1])
    channel = make_mask("channel", (4, 2, 2))
    assert channel[:2].all() and not channel[2:].any()
    random = make_mask("random", 10, seed=3)
    assert torch.equal(random, make_mask("random", 10, seed=3)) and int(random.sum()) == 5
    assert not torch.equal(random, make_mask("random", 10, seed=4))


def test_bad_masks_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 2 elements"):
        make_mask("half", 1)
    with pytest.raises(ValueError, match="for images"):
        make_mask("checkerboard", 6)
    with pytest.raises(ValueError, match="at least 2 channels"):
        make_mask("channel", (1, 4, 4))
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask("diagonal", 4)
    with pytest.raises(ff.ShapeError, match=r"event shape \(4,\)"):
        as_mask([1, 0, 1], (4,))
    with pytest.raises(ValueError, match="one fixed"):
        as_mask([1, 1, 1], (3,))


LAYERS = [
    ("additive", lambda: T.AdditiveCoupling(6, hidden=(16,)), (6,)),
    ("affine", lambda: T.AffineCoupling(6, mask="random", seed=0, hidden=(16,)), (6,)),
    ("spline", lambda: T.SplineCoupling(6, mask="half", bins=4, hidden=(16,)), (6,)),
    ("linear", lambda: T.LinearAffineCoupling(6), (6,)),
    ("affine-image", lambda: T.AffineCoupling((2, 4, 4), hidden=(8,)), (2, 4, 4)),
    ("spline-image", lambda: T.SplineCoupling((2, 4, 4), mask="channel", hidden=(8,)), (2, 4, 4)),
]


@pytest.mark.parametrize(("name", "make", "shape"), LAYERS, ids=[layer[0] for layer in LAYERS])
def test_layers_start_as_the_identity_and_leave_the_fixed_part_alone(name, make, shape):
    torch.manual_seed(0)
    t = make()
    x = torch.randn(5, *shape)
    y, ladj = t(x)
    # Exact for the affine family; the spline's identity is exact up to rounding.
    assert torch.allclose(y, x, atol=1e-5) and torch.allclose(ladj, torch.zeros(5), atol=1e-5)
    _perturb(t)
    y, ladj = t(x)
    fixed = t.mask.expand_as(x)
    assert torch.equal(y[fixed], x[fixed])
    assert not torch.allclose(y[~fixed], x[~fixed])
    # The transformed part depends on the fixed part (the conditioner is wired in).
    x2 = x.clone()
    x2[fixed] += 1.0
    assert not torch.allclose(t(x2)[0][~fixed], y[~fixed])


def test_context_reaches_the_conditioner_for_vectors_and_images():
    torch.manual_seed(0)
    for t, shape in [
        (T.AffineCoupling(4, context_features=2, hidden=(8,)), (4,)),
        (T.AffineCoupling((2, 4, 4), context_features=2, hidden=(8,)), (2, 4, 4)),
    ]:
        _perturb(t)
        x = torch.randn(3, *shape)
        a, b = t(x, context=torch.zeros(3, 2))[0], t(x, context=torch.ones(3, 2))[0]
        assert not torch.allclose(a, b)
        # A context with a larger batch broadcasts the input.
        assert t(x[0], context=torch.randn(6, 2))[0].shape == (6, *shape)


def test_linear_affine_coupling_is_the_block_triangular_matrix_of_the_theorems():
    torch.manual_seed(0)
    layers = [T.LinearAffineCoupling(6, flip=bool(i % 2)).double() for i in range(4)]
    for t in layers:
        _perturb(t)
        with torch.no_grad():
            t.net.linear.bias.zero_()
        x = torch.randn(6, dtype=torch.float64)
        m = t.matrix()
        assert torch.allclose(t(x)[0], m @ x)
        assert torch.allclose(torch.autograd.functional.jacobian(lambda v, t=t: t(v)[0], x), m)
        assert torch.allclose(t(x)[1], torch.linalg.slogdet(m)[1])
    lower, upper = layers[0].matrix(), layers[1].matrix()
    assert torch.equal(lower[:3, 3:], torch.zeros(3, 3)) and torch.equal(lower[:3, :3], torch.eye(3))
    assert torch.equal(upper[3:, :3], torch.zeros(3, 3)) and torch.equal(upper[3:, 3:], torch.eye(3))
    # The product of alternating layers is a general linear map with positive determinant.
    flow = T.Compose(*layers)
    x = torch.randn(6, dtype=torch.float64)
    product = layers[3].matrix() @ layers[2].matrix() @ upper @ lower
    assert torch.allclose(flow(x)[0], product @ x) and torch.linalg.det(product) > 0


def test_custom_conditioner_is_used_but_not_saveable(tmp_path):
    net = torch.nn.Linear(2, 2 * 2)
    t = T.AffineCoupling(4, mask="half", conditioner=net)
    x = torch.randn(3, 4)
    assert torch.allclose(t.inverse(t(x)[0])[0], x, atol=1e-6)
    flow = ff.Flow(ff.distributions.StandardNormal((4,)), [t])
    with pytest.raises(ff.SpecError, match="custom networks"):
        ff.save(flow, tmp_path / "m")


def test_wrong_arguments_are_refused():
    with pytest.raises(ValueError, match="needs an image event"):
        T.AffineCoupling(4, conditioner="resnet")
    with pytest.raises(TypeError, match="Transformer"):
        T.Coupling("affine", 4)
    t = T.AffineCoupling(4, context_features=3)
    with pytest.raises(ff.ShapeError, match=r"\(\.\.\., 3\)"):
        t(torch.randn(2, 4), context=torch.randn(2, 2))


@pytest.fixture
def one_thread():
    # Tiny networks: thread hand-offs cost more than they save on a loaded CI machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_realnvp_learns_moons_with_a_plain_adam_loop(one_thread):
    from flowforge.datasets import generate

    torch.manual_seed(0)
    train, test = generate("moons", 2000, seed=0), generate("moons", 1000, seed=1)
    flow = models.RealNVP(2, transforms=6, hidden=(32, 32))
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = -flow.log_prob(test).mean().item()
    for _ in range(200):
        loss = -flow.log_prob(train[torch.randint(0, len(train), (128,), generator=g)]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -flow.log_prob(test).mean().item()
    # Measured over seeds 0-5: 3.7-3.9 nats before, 2.4-2.8 after 200 steps.
    assert after < before - 0.7 and after < 2.9


@pytest.mark.parametrize(
    "make",
    [
        lambda: models.NICE(3, transforms=3, hidden=(16,)),
        lambda: models.RealNVP(3, transforms=3, hidden=(16,), context_features=2),
        lambda: models.NSF(3, transforms=2, hidden=(16,), context_features=2),
        lambda: models.NSF(3, kind="autoregressive", transforms=2, hidden=(16,)),
    ],
    ids=["nice", "realnvp-cond", "nsf-coupling-cond", "nsf-ar"],
)
def test_vector_models_transform_every_feature_and_round_trip(make):
    torch.manual_seed(0)
    flow = make()
    _perturb(flow, 0.2)
    c = flow.context_features
    context = torch.randn(4, c) if c else None
    x = torch.randn(4, 3)
    z, _ = flow.inverse(x, context)
    assert torch.allclose(flow(z, context)[0], x, atol=1e-4)
    # Every output feature depends on every input feature somewhere in the stack.
    jac = torch.autograd.functional.jacobian(lambda v: flow.inverse(v, context)[0][0], x)[:, 0]
    assert bool((jac.abs() > 1e-6).all())
    assert flow.sample((2,), context=context).shape == ((2, 4, 3) if c else (2, 3))


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="not both or neither"):
        models.RealNVP(2, shape=(1, 4, 4))
    with pytest.raises(ValueError, match="divisible by 8"):
        models.Glow((1, 12, 12), levels=3)
    with pytest.raises(ValueError, match="kind='autoregressive'"):
        models.NSF(1)
    with pytest.raises(ValueError, match="kind must be"):
        models.NSF(3, kind="residual")


def test_affine_coupling_density_direction_stretches_at_most_e_per_layer():
    # The default bound (1, 3): whatever the conditioner says, log|det| of the density
    # direction is at most 1 per transformed entry and at least -3 (reached in float32 when
    # tanh saturates); a number bounds both sides.
    torch.manual_seed(0)
    x = 50 * torch.randn(4000, 4)  # far outside any training data
    for bound, lower, upper in (((1.0, 3.0), 1.0, 3.0), (3.0, 3.0, 3.0), ((0.5, 2.0), 0.5, 2.0)):
        t = T.AffineCoupling(4, mask="half", hidden=(16,), scale_bound=bound)
        _perturb(t, scale=20.0)
        with torch.no_grad():
            _, ladj = t.inverse(x)
        n = int((~t.mask).sum())
        assert float(ladj.max()) <= n * lower and float(ladj.min()) >= -n * upper
        assert float(ladj.max()) > 0.9 * n * lower  # the bound is reached, not merely respected
    with pytest.raises(ValueError, match="pair"):
        T.AffineCoupling(4, scale_bound=(1.0, 0.0))


@pytest.mark.parametrize("shape", [(4,), (2, 4, 4)])
def test_identity_init_false_starts_from_a_random_map_and_saves(shape, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(6, *shape)
    start = T.AffineCoupling(shape, hidden=(8,))
    assert torch.allclose(start(x)[0], x)
    t = T.AffineCoupling(shape, hidden=(8,), identity_init=False)
    assert not torch.allclose(t(x)[0], x)
    flow = ff.Flow(ff.distributions.StandardNormal(shape), [t])
    with torch.no_grad():
        assert torch.equal(ff.load(ff.save(flow, tmp_path / "m")).log_prob(x), flow.log_prob(x))
    z = torch.randn(6, 4)
    for builder, default in ((models.RealNVP, False), (models.MAF, False)):
        start = builder(4, transforms=1, hidden=(8,))
        assert torch.allclose(start.transform(z)[0], z) == default
        assert torch.allclose(builder(4, transforms=1, hidden=(8,), identity_init=True).transform(z)[0], z)
        model = builder(4, transforms=1, hidden=(8,), identity_init=False)
        assert not torch.allclose(model.transform(z)[0], z)
    with pytest.raises(TypeError, match="identity_init"):
        T.AffineCoupling(4, identity_init="no")
    with pytest.raises(TypeError, match="identity_init"):
        models.RealNVP(4, identity_init=1)
    # Many features (digits: a random start trained worse) and images start as the identity.
    wide = torch.randn(6, 16)
    assert torch.allclose(models.RealNVP(16, transforms=1, hidden=(8,)).transform(wide)[0], wide)
    image = torch.rand(3, 1, 4, 4)
    for flag, starts_as_identity in ((None, True), (False, False)):
        flow = models.RealNVP(shape=(1, 4, 4), transforms=1, levels=1, hidden=(8,), identity_init=flag)
        assert torch.allclose(flow.transform(image)[0], image) == starts_as_identity


@pytest.mark.parametrize(
    ("mask", "flip", "layout"),
    [
        ("alternate", False, "even"),
        ("alternate", True, "odd"),
        ("half", False, "prefix"),
        ("random", False, "gather"),
    ],
)
@pytest.mark.parametrize("context", [None, 3])
def test_every_split_layout_computes_what_the_gather_computes(mask, flip, layout, context):
    # The strided and sliced splits are speed paths: the same map, values and gradients as the
    # general permutation gather.
    torch.manual_seed(0)
    fast = T.AffineCoupling(
        6, mask=mask, flip=flip, seed=1, hidden=(8,), identity_init=False, context_features=context
    )
    assert fast._layout == layout
    general = T.AffineCoupling(6, mask=mask, flip=flip, seed=1, hidden=(8,), context_features=context)
    general.load_state_dict(fast.state_dict())
    general._layout = "gather"
    x = torch.randn(5, 6, requires_grad=True)
    c = None if context is None else torch.randn(5, context)
    for direction in ("forward", "inverse"):
        (y1, l1), (y2, l2) = getattr(fast, direction)(x, c), getattr(general, direction)(x, c)
        torch.testing.assert_close(y1, y2, rtol=0, atol=1e-6)
        torch.testing.assert_close(l1, l2, rtol=0, atol=1e-6)
        g1 = torch.autograd.grad((y1.square().sum() + l1.sum()), [x, *fast.parameters()])
        g2 = torch.autograd.grad((y2.square().sum() + l2.sum()), [x, *general.parameters()])
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_logit_scale_reparametrises_the_spline_bins_and_nsf_picks_it(tmp_path):
    from flowforge.transforms.transformers import RQSplineTransformer

    torch.manual_seed(0)
    x, raw = torch.randn(7, 3), torch.randn(7, 3, 3 * 4 - 1)
    scaled = RQSplineTransformer(4, bound=3.0, logit_scale=0.25)
    plain = RQSplineTransformer(4, bound=3.0)
    same = torch.cat([raw[..., :8] * 0.25, raw[..., 8:]], dim=-1)  # derivatives are not scaled
    for a, b in zip(scaled.forward(x, raw), plain.forward(x, same), strict=True):
        assert torch.allclose(a, b)
    assert not torch.allclose(scaled.forward(x, raw)[0], plain.forward(x, raw)[0])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="logit_scale"):
            RQSplineTransformer(4, logit_scale=bad)

    def scales(flow):
        return {
            m.transformer.logit_scale
            for m in flow.modules()
            if isinstance(m, (T.SplineCoupling, T.MaskedSplineAutoregressive))
        }

    # The layers' own default stays 1: saved files whose spec predates the option rebuild as they were.
    assert scales(T.SplineCoupling(3)) == scales(T.MaskedSplineAutoregressive(3)) == {1.0}
    assert scales(models.NSF(4, hidden=(16, 64))) == {0.125}  # 1 / sqrt(last hidden width)
    assert scales(models.NSF(4, kind="autoregressive", hidden=(16,))) == {1.0}
    assert scales(models.NSF(4, hidden=(16,), logit_scale=2.0)) == {2.0}
    flow = models.NSF(3, transforms=2, hidden=(16,), identity_init=False)
    with torch.no_grad():
        loaded = ff.load(ff.save(flow, tmp_path / "m"))
        assert scales(loaded) == {0.25}
        assert torch.equal(loaded.log_prob(x), flow.log_prob(x))
