"""Image pieces: squeeze, factor-out, multi-scale stacks, dequantization, bits/dim, digits and Glow."""

from __future__ import annotations

import math

import pytest
import torch

import flowforge as ff
from flowforge import models
from flowforge import transforms as T
from flowforge.datasets import DIGITS_LEVELS, digits
from flowforge.transforms.dequantize import VariationalDequantizer, bits_per_dim, uniform_dequantize


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def test_squeeze_moves_each_2x2_block_into_four_channels():
    x = torch.arange(2 * 4 * 4.0).reshape(2, 4, 4)
    y, ladj = T.Squeeze((2, 4, 4))(x)
    assert y.shape == (8, 2, 2) and ladj.shape == ()
    # Channel c*4 + i*2 + j at (h, w) holds pixel (2h + i, 2w + j) of channel c.
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[c * 4 + i * 2 + j], x[c, i::2, j::2])
    with pytest.raises(ff.ShapeError, match=r"\(\.\.\., 8, 2, 2\)"):
        T.Squeeze((2, 4, 4)).inverse(x)
    with pytest.raises(ValueError, match="divisible"):
        T.Squeeze((1, 3, 4))


def test_a_flow_can_work_at_half_resolution_with_the_inverse_squeeze_last():
    torch.manual_seed(0)
    coupling = T.AffineCoupling((4, 2, 2), mask="channel", hidden=(8,))
    _perturb(coupling)
    flow = ff.Flow(ff.distributions.StandardNormal((4, 2, 2)), [coupling, T.Squeeze((1, 4, 4)).inv])
    x = flow.sample((3,))
    assert x.shape == (3, 1, 4, 4)
    z, ladj = coupling.inverse(T.Squeeze((1, 4, 4))(x)[0])
    expected = ff.distributions.StandardNormal((4, 2, 2)).log_prob(z) + ladj
    assert torch.allclose(flow.log_prob(x), expected)


def test_split_passes_the_factored_half_to_the_base():
    torch.manual_seed(0)
    inner = T.LULinear(3)
    _perturb(inner)
    t = T.Split(inner, 6)
    x = torch.randn(4, 6)
    z, ladj = t.inverse(x)
    assert torch.equal(z[:, 3:], x[:, 3:])
    assert torch.allclose(z[:, :3], inner.inverse(x[:, :3])[0]) and torch.allclose(
        ladj, inner.inverse(x[:, :3])[1]
    )


def test_learned_prior_is_a_gaussian_whose_mean_and_scale_depend_on_the_kept_half():
    torch.manual_seed(0)
    t = T.Split(None, 4, prior="learned", hidden=(16,))
    _perturb(t)
    flow = ff.Flow(ff.distributions.StandardNormal((4,)), [t])
    x = torch.randn(7, 4)
    h, z2 = x[:, :2], x[:, 2:]
    params = t.coupling.net(h).reshape(7, 2, 2)
    mu, log_sigma = params[..., 0], t.coupling.transformer.log_scale(params[..., 1])
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(h).sum(-1)
    expected = expected + torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z2).sum(-1)
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-5)


def test_multiscale_squeezes_runs_steps_then_factors_out_before_the_coarse_scale():
    torch.manual_seed(0)
    coarse = T.MultiScale(T.AffineCoupling((8, 2, 2), mask="channel", hidden=(8,)), (2, 4, 4))
    steps = T.Compose(T.Invertible1x1Conv(4), T.AffineCoupling((4, 4, 4), mask="channel", hidden=(8,)))
    t = T.MultiScale(steps, (1, 8, 8), inner=coarse)
    _perturb(t)
    x = torch.randn(3, 1, 8, 8)
    z, ladj = t.inverse(x)
    squeeze = T.Squeeze((1, 8, 8))
    u, l_steps = steps.inverse(squeeze(x)[0])
    h, l_coarse = coarse.inverse(u[:, :2])
    assert torch.allclose(z, squeeze.inverse(torch.cat([h, u[:, 2:]], 1))[0])
    assert torch.allclose(ladj, l_steps + l_coarse)
    flow = ff.Flow(ff.distributions.StandardNormal((1, 8, 8)), [t])
    assert flow.sample((2,)).shape == (2, 1, 8, 8)
    assert torch.allclose(flow.inverse(flow(z)[0])[0], z, atol=1e-5)


def test_multiscale_refuses_steps_of_the_wrong_shape():
    with pytest.raises(ff.ShapeError, match=r"runs its steps on \(4, 2, 2\)"):
        T.MultiScale(T.AffineCoupling((1, 4, 4), hidden=(4,)), (1, 4, 4))
    with pytest.raises(ff.ShapeError, match=r"keeps a part of shape \(2, 2, 2\)"):
        T.MultiScale(T.Invertible1x1Conv(4), (1, 4, 4), inner=T.AffineCoupling((3, 2, 2), hidden=(4,)))
    with pytest.raises(ValueError, match="pass inner="):
        T.MultiScale(T.Invertible1x1Conv(4), (1, 4, 4), prior="learned")


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_digits_are_17_level_8x8_images_split_by_seed():
    data = digits(seed=0)
    assert data.shape == (1, 8, 8) and data.levels == DIGITS_LEVELS == 17
    assert (len(data.train), len(data.val), len(data.test)) == (1437, 180, 180)
    assert data.train.dtype == torch.long and int(data.train.min()) == 0 and int(data.train.max()) == 16
    assert len(data.train_labels) == len(data.train) and set(data.test_labels.tolist()) <= set(range(10))
    assert torch.equal(digits(seed=0).test, data.test) and not torch.equal(digits(seed=1).test, data.test)
    # The three splits partition the 1,797 images: the same multiset of images as the source.
    from sklearn.datasets import load_digits

    source = torch.as_tensor(load_digits().images, dtype=torch.long).flatten(1)
    everything = torch.cat([data.train, data.val, data.test]).flatten(1)
    for a, b in zip(
        torch.unique(everything, dim=0, return_counts=True), torch.unique(source, dim=0, return_counts=True)
    ):
        assert torch.equal(a, b)


def test_bits_per_dim_against_a_hand_computation():
    # 1.5 nats on [0, 1)^3 with 4 levels: 1.5 + 3 ln 4 = 5.65888 nats = 8.16404 bits, / 3 dims.
    assert bits_per_dim(1.5, 3, levels=4) == pytest.approx(2.721348, abs=1e-6)
    assert bits_per_dim(torch.tensor(3 * math.log(2)), 3).item() == pytest.approx(1.0)
    # A uniform density on [0, 1)^D costs exactly log2(levels) bits per dimension.
    assert bits_per_dim(0.0, 64, levels=17) == pytest.approx(math.log2(17))


def test_uniform_dequantization_stays_in_the_cell_of_each_level():
    x = torch.randint(0, 17, (100, 1, 8, 8))
    y = uniform_dequantize(x, 17, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and bool(((y >= 0) & (y < 1)).all())
    assert torch.equal((y * 17).floor().long(), x)
    with pytest.raises(ValueError, match=r"0\.\.16"):
        uniform_dequantize(torch.tensor([17]), 17)
    with pytest.raises(ValueError, match="integer-valued"):
        uniform_dequantize(torch.tensor([0.5]), 17)


def test_variational_dequantization_tightens_the_uniform_bound_but_stays_a_bound(one_thread):
    torch.manual_seed(0)
    levels = 4
    # A fixed model y ~ N(0.5, 0.25^2) per coordinate: P(x) is a product of normal CDF differences.
    diag = T.Diagonal(2)
    with torch.no_grad():
        diag.params[..., 0] = 0.5
        diag.params[..., 1] = math.log(0.25)
    flow = ff.Flow(ff.distributions.StandardNormal((2,)), [diag]).requires_grad_(False)
    x = torch.cartesian_prod(torch.arange(levels), torch.arange(levels))
    normal = torch.distributions.Normal(0.5, 0.25)
    exact = (normal.cdf((x + 1) / levels) - normal.cdf(x / levels)).log().sum(-1)
    deq = VariationalDequantizer((2,), levels, hidden=(32,))
    opt = torch.optim.Adam(deq.parameters(), lr=1e-2)
    for _ in range(200):
        loss = -deq.elbo(flow, x.repeat(8, 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    n = 2000
    with torch.no_grad():
        variational = deq.elbo(flow, x.repeat(n, 1)).reshape(n, -1).mean(0)
        y = uniform_dequantize(x.repeat(n, 1), levels, generator=torch.Generator().manual_seed(1))
        uniform = (flow.log_prob(y) - 2 * math.log(levels)).reshape(n, -1).mean(0)
    # Measured (seeds 0-2): exact -3.071, uniform -3.17, variational -3.10 on average over cells.
    assert uniform.mean() < exact.mean() - 0.05
    assert variational.mean() > uniform.mean() + 0.03
    assert bool((variational < exact + 0.02).all())
    # log q(u | x) is the noise flow's own density of the noise it returned.
    y, log_q = deq(x)
    context = x / levels - 0.5
    assert torch.allclose(deq.noise.log_prob(y * levels - x, context), log_q, atol=1e-4)


def test_glow_trains_one_epoch_of_digits_in_seconds(one_thread):
    torch.manual_seed(0)
    data = digits(seed=0)
    g = torch.Generator().manual_seed(0)
    flow = models.Glow(data.shape, levels=2, steps=2, hidden=(16,))
    opt = torch.optim.Adam(flow.parameters(), lr=2e-3)
    test = uniform_dequantize(data.test, data.levels, generator=g)
    start = None
    for idx in torch.randperm(len(data.train), generator=g).split(64):
        loss = -flow.log_prob(uniform_dequantize(data.train[idx], data.levels, generator=g)).mean()
        if start is None:  # after ActNorm's data initialisation on the first batch
            with torch.no_grad():
                start = bits_per_dim(-flow.log_prob(test).mean().item(), 64, data.levels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()
    with torch.no_grad():
        log_p = flow.log_prob(test)
        samples = flow.sample((4,))
    assert bool(torch.isfinite(log_p).all()) and samples.shape == (4, 1, 8, 8)
    # Measured (seeds 0-2): 4.63-4.64 bits/dim after initialisation, 3.48-3.57 after the epoch.
    assert bits_per_dim(-log_p.mean().item(), 64, data.levels) < start - 0.5


def test_variational_dequantizer_keeps_the_version_1_couplings():
    # Its checkpoints predate format version 2; the noise flow must stay the same map.
    deq = VariationalDequantizer((4,), 17, hidden=(8,))
    couplings = [m for m in deq.modules() if isinstance(m, T.AffineCoupling)]
    assert couplings
    for c in couplings:
        assert c.transformer.shift_first is False and c.transformer.scale_bound == 3.0
