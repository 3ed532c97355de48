"""Planar and radial layers: invertible for any raw parameters, exact inverses, and their VI models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowforge as ff
from flowforge import models, targets
from flowforge import transforms as T

D = torch.float64
RAW = st.floats(-100, 100, allow_nan=False, allow_infinity=False)
HYPOTHESIS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def _vector(data, d: int) -> torch.Tensor:
    return torch.tensor(data.draw(st.lists(RAW, min_size=d, max_size=d)), dtype=D)


@HYPOTHESIS
@given(
    d=st.integers(1, 4),
    activation=st.sampled_from(["tanh", "softplus", "relu", "leaky_relu"]),
    b=st.floats(-30, 30),
    data=st.data(),
)
def test_planar_stays_invertible_for_adversarial_parameters(d, activation, b, data):
    t = T.Planar(d, activation=activation).double()
    with torch.no_grad():
        t.u.copy_(_vector(data, d))
        t.w.copy_(_vector(data, d))
        t.b.fill_(b)
    torch.manual_seed(0)
    z = 5 * torch.randn(64, d, dtype=D)
    with torch.no_grad():
        x, ladj = t(z)
        z_back, ladj_back = t.inverse(x)
        x_again, ladj_again = t(z_back)
        u_hat = t._params(None, z)[0]
    assert torch.isfinite(ladj).all() and torch.isfinite(z_back).all()
    # The constraint: 1 + h' w^T u_hat >= 1e-4 (up to rounding) wherever the layer is evaluated.
    assert (ladj >= torch.log(torch.tensor(1e-4 * (1 - 1e-6), dtype=D))).all()
    # The inverse's log-det is minus the forward one at the point it returns (exactly, up to rounding) ...
    assert torch.allclose(ladj_back, -ladj_again, rtol=1e-9, atol=1e-9)
    # Backward stable (maps back onto x) and accurate up to the layer's conditioning.
    scale = 1 + x.abs().amax(-1) + z.abs().amax(-1)
    assert ((x_again - x).abs().amax(-1) <= 1e-9 * scale).all()
    cond = (1 + u_hat.norm() * t.w.norm()) / ladj.exp().clamp(max=1)
    assert ((z_back - z).abs().amax(-1) <= 1e-9 * cond * (1 + z.abs().amax(-1))).all()
    # ... and at the true point up to the same conditioning: near the 1e-4 floor of 1 + h' w^T u_hat
    # (saturated softplus, |w| and |u| ~ 70) a 1e-12 error in w^T z moves the log-det by ~1e-8.
    assert ((ladj_back + ladj).abs() <= 1e-9 * cond * (1 + z.abs().amax(-1))).all()
    # Monotone along w: a -> w^T f(z0 + a w/|w|) strictly increases.
    w = t.w.detach()
    if w.norm() > 1e-3:
        a = torch.linspace(-30, 30, 301, dtype=D).unsqueeze(-1)
        with torch.no_grad():
            along = t(z[0] + a * w / w.norm())[0] @ w
        assert (along.diff() > 0).all()


@HYPOTHESIS
@given(d=st.integers(1, 4), alpha_raw=st.floats(-50, 50), beta_raw=st.floats(-50, 50), data=st.data())
def test_radial_stays_invertible_for_adversarial_parameters(d, alpha_raw, beta_raw, data):
    t = T.Radial(d).double()
    center = _vector(data, d)
    with torch.no_grad():
        t.center.copy_(center)
        t.alpha_raw.fill_(alpha_raw)
        t.beta_raw.fill_(beta_raw)
    torch.manual_seed(0)
    # Points at distances 1e-3 .. 1e2 from the centre.
    z = center + torch.randn(64, d, dtype=D) * torch.logspace(-3, 2, 64, dtype=D).unsqueeze(-1)
    direction = torch.randn(d, dtype=D)
    radii = torch.logspace(-6, 3, 300, dtype=D).unsqueeze(-1)
    with torch.no_grad():
        x, ladj = t(z)
        z_back, ladj_back = t.inverse(x)
        x_again = t(z_back)[0]
        radius_map = (t(center + radii * direction / direction.norm())[0] - center).norm(dim=-1)
    assert torch.isfinite(ladj).all() and torch.isfinite(z_back).all()
    assert torch.allclose(ladj_back, -ladj, rtol=1e-9, atol=1e-9)
    assert (radius_map.diff() > 0).all()  # the radius map is strictly increasing
    scale = 1 + x.abs().amax(-1) + z.abs().amax(-1)
    assert ((x_again - x).abs().amax(-1) <= 1e-9 * scale).all()
    err = (z_back - z).abs().amax(-1) / (1 + z.abs().amax(-1))
    assert (err * ladj.exp().clamp(max=1) <= 1e-9).all()


def test_relu_planar_log_det_jumps_across_the_hyperplane():
    t = T.Planar(2, activation="relu").double()
    with torch.no_grad():
        t.w.copy_(torch.tensor([1.0, 0.0]))
        t.u.copy_(torch.tensor([-3.0, 1.0]))
        t.b.fill_(0.5)
    s = t._params(None, t.w)[3]
    z = torch.tensor([[-0.5 - 1e-9, 0.0], [-0.5 + 1e-9, 0.0]], dtype=D)
    ladj = t(z)[1]
    assert ladj[0].item() == 0.0  # inactive side: the identity
    assert ladj[1].item() == pytest.approx(torch.log1p(s).item(), rel=1e-12)
    assert s.item() > -1


def test_planar_root_solve_raises_instead_of_guessing():
    t = T.Planar(3, activation="softplus", max_iter=1).double()
    with torch.no_grad():
        t.u.fill_(4.0)
    x = 50 * torch.randn(8, 3, dtype=D)
    with pytest.raises(ff.InversionError) as info:
        t.inverse(x)
    assert info.value.residual > 0


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.PlanarFlow(1, layers=6, activation="relu"),
        lambda: models.PlanarFlow(1, layers=6, activation="tanh"),
        lambda: models.RadialFlow(1, layers=6),
    ],
    ids=["planar-relu", "planar-tanh", "radial"],
)
def test_one_dimensional_densities_integrate_to_one(build):
    torch.manual_seed(0)
    flow = build().double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p))
        # A fine grid: the ReLU flow's density jumps where a layer's kink maps.
        grid = torch.linspace(-20, 20, 400001, dtype=D)
        mass = torch.trapezoid(flow.log_prob(grid.unsqueeze(-1)).exp(), grid)
        assert flow.sample((10000,)).abs().max() < 15  # the grid covers the mass
    assert mass.item() == pytest.approx(1.0, abs=1e-5)


def test_conditional_models_agree_between_directions():
    torch.manual_seed(1)
    context = torch.randn(3, 2, dtype=D)
    for flow in (
        models.PlanarFlow(3, layers=3, context_features=2),
        models.RadialFlow(3, layers=3, context_features=2),
    ):
        flow = flow.double()
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.3 * torch.randn_like(p))
        x, log_q = flow.rsample_and_log_prob((4,), context)
        assert torch.allclose(flow.log_prob(x, context.expand(4, 3, 2)), log_q, atol=1e-8)


def test_planar_flow_vi_on_the_banana():
    """VI fits, and the ELBO stays below log Z = 0 (a wrong log-det could push it above)."""
    torch.manual_seed(0)
    target = targets.get("banana")
    flow = models.PlanarFlow(2, layers=8)
    history = ff.fit_vi(flow, target.log_density, steps=200, lr=1e-2, progress=False)
    torch.manual_seed(1)
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob((4000,))
        elbo = target.log_density(x) - log_q
    mean, se = elbo.mean().item(), elbo.std().item() / 4000**0.5
    assert history["elbo"][0] < -1.5
    assert -0.7 < mean <= target.log_z + 3 * se
