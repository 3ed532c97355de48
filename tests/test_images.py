"""Image pieces: squeeze layout, factor-out with base or learned prior, multi-scale stacks."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge import transforms as T


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
