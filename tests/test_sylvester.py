"""Sylvester layers and flows, and the Householder flow (the reflections behind H-SNF)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowforge as ff
from flowforge import models
from flowforge import transforms as T

D = torch.float64


@pytest.mark.parametrize("kind", ["orthogonal", "householder"])
def test_q_has_orthonormal_columns(kind):
    torch.manual_seed(0)
    t = T.Sylvester(6, hidden=4, kind=kind).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(2 * torch.randn_like(p))
    q = t._q(torch.zeros((), dtype=D))
    assert q.shape == (6, 4)
    assert torch.allclose(q.T @ q, torch.eye(4, dtype=D), atol=1e-12)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["orthogonal", "householder", "triangular"]),
    activation=st.sampled_from(["tanh", "relu", "softplus"]),
    diag=st.floats(-40, 40),
    scale=st.floats(0.1, 20),
)
def test_invertible_for_extreme_diagonals_and_weights(kind, activation, diag, scale):
    torch.manual_seed(1)
    t = T.Sylvester(4, hidden=None, kind=kind, activation=activation).double()
    with torch.no_grad():
        t.r_diag.fill_(diag)
        t.rt_diag.fill_(-diag)  # R_ii R~_ii -> -(1 - 1e-4): as close to singular as allowed
        t.r_upper.mul_(0).add_(scale * torch.randn_like(t.r_upper))
        t.rt_upper.mul_(scale)
        t.bias.normal_()
    z = 3 * torch.randn(32, 4, dtype=D)
    with torch.no_grad():
        x, ladj = t(z)
        z_back, ladj_back = t.inverse(x)
        x_again, ladj_again = t(z_back)
    assert torch.isfinite(ladj).all() and (ladj >= 4 * math.log(1e-4) - 1e-6).all()
    # Near-singular layers amplify rounding, so the inverse log-det is compared at the point found.
    assert torch.allclose(ladj_back, -ladj_again, rtol=1e-12, atol=1e-12)
    scale_x = 1 + x.abs().amax(-1) + z.abs().amax(-1)
    assert ((x_again - x).abs().amax(-1) <= 1e-9 * scale_x).all()


def test_inverse_raises_when_a_solve_does_not_converge():
    torch.manual_seed(2)
    t = T.Sylvester(3, kind="triangular", activation="softplus", max_iter=1).double()
    with torch.no_grad():
        t.r_upper.normal_()
        t.r_diag.fill_(2.0)
    with pytest.raises(ff.InversionError):
        t.inverse(20 * torch.randn(6, 3, dtype=D))


def test_log_det_gradients_span_at_most_m_directions():
    """Seed 000's topology-matching mechanism: grad_z log|det| lies in the m-dim range of Q."""
    torch.manual_seed(3)
    t = T.Sylvester(5, hidden=2).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.5 * torch.randn_like(p))
    z = torch.randn(200, 5, dtype=D, requires_grad=True)
    (grad,) = torch.autograd.grad(t(z)[1].sum(), z)
    singular = torch.linalg.svdvals(grad)
    assert singular[1] > 1e-3 * singular[0]  # two directions are used...
    assert singular[2] < 1e-12 * singular[0]  # ...and no third


@pytest.mark.parametrize("kind", ["orthogonal", "householder", "triangular"])
def test_sylvester_flow_density_integrates_to_one(kind):
    torch.manual_seed(4)
    flow = models.SylvesterFlow(2, layers=3, kind=kind).double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
        assert flow.sample((10000,)).abs().max() < 12
        side = torch.linspace(-15, 15, 601, dtype=D)
        grid = torch.cartesian_prod(side, side)
        density = flow.log_prob(grid).exp().reshape(601, 601)
        mass = torch.trapezoid(torch.trapezoid(density, side), side)
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_householder_flow_is_a_full_covariance_gaussian():
    torch.manual_seed(5)
    flow = models.HouseholderFlow(3).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    h = flow(torch.eye(3, dtype=D))[0].T  # columns: images of the basis vectors = H
    mu, sigma = flow.base.loc.detach(), flow.base.log_scale.detach().exp()
    reference = torch.distributions.MultivariateNormal(h @ mu, h @ torch.diag(sigma**2) @ h.T)
    x = 2 * torch.randn(20, 3, dtype=D)
    assert torch.allclose(flow.log_prob(x), reference.log_prob(x), atol=1e-10)


def test_householder_flow_fits_a_correlated_gaussian():
    """d reflections reach any covariance: VI on a correlated Gaussian attains log Z."""
    cov = torch.tensor([[2.0, 1.2, 0.3], [1.2, 1.5, -0.6], [0.3, -0.6, 1.0]])
    target = torch.distributions.MultivariateNormal(torch.tensor([1.0, -1.0, 0.5]), cov)
    torch.manual_seed(6)
    flow = models.HouseholderFlow(3)
    ff.fit_vi(flow, target.log_prob, steps=300, lr=5e-2, samples=128, progress=False)
    torch.manual_seed(7)
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob((20000,))
        elbo = (target.log_prob(x) - log_q).mean().item()
    assert -0.02 < elbo <= 0.01  # log Z = 0; ELBO = -KL(q || p)
