"""InvertibleResidual and ResidualFlow: Lipschitz bound, inverse, implicit gradients, log-det estimators."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge import models
from flowforge import transforms as T

D = torch.float64


def _block(seed: int, scale: float, **kw) -> T.InvertibleResidual:
    torch.manual_seed(seed)
    t = T.InvertibleResidual(3, **kw).double()
    with torch.no_grad():
        for layer in t.layers:
            layer.weight.mul_(scale)  # large weights: the spectral normalisation is what binds
    return t


def _exact_twin(t: T.InvertibleResidual, **kw) -> T.InvertibleResidual:
    twin = T.InvertibleResidual(3, logdet="exact", **kw).double()
    twin.load_state_dict(t.state_dict())
    return twin


@pytest.mark.parametrize(
    ("activation", "hidden"), [("lipswish", (16, 16)), ("elu", (16,)), ("tanh", (16,)), ("tanh", ())]
)
def test_lipschitz_bound_holds_for_any_weights(activation, hidden):
    t = _block(1, 50.0, hidden=hidden, lipschitz=0.7, activation=activation)
    torch.manual_seed(2)
    a, b = torch.randn(2, 500, 3, dtype=D)
    with torch.no_grad():
        ga, gb = t(a)[0] - a, t(b)[0] - b
        ratio = (ga - gb).norm(dim=-1) / (a - b).norm(dim=-1)
        weights = t._weights(a)
        _, ders = t._g(a, None, weights)
        jac_norm = torch.linalg.matrix_norm(t._jacobian(weights, ders), 2)
    assert ratio.max() <= 0.7 + 1e-12
    assert jac_norm.max() <= 0.7 + 1e-12
    if not hidden:  # a linear g: the bound is attained, so the normalisation is not loose
        assert jac_norm.max() == pytest.approx(0.7, abs=1e-9)


def test_inverse_gradients_are_exact():
    t = _block(3, 5.0, hidden=(8,), lipschitz=0.9)
    x = torch.randn(4, 3, dtype=D, requires_grad=True)
    z, ladj = t.inverse(x)
    (z.sum() + ladj.sum()).backward()
    # Central finite differences of the same scalar in one weight and in the input.
    w = t.layers[0].weight
    grad_w = w.grad[1, 2].item()

    def value(eps_w=0.0, eps_x=0.0):
        with torch.no_grad():
            w[1, 2] += eps_w
            xx = x.detach().clone()
            xx[0, 1] += eps_x
            z_, l_ = t.inverse(xx)
            w[1, 2] -= eps_w
        return (z_.sum() + l_.sum()).item()

    h = 1e-6
    assert grad_w == pytest.approx((value(eps_w=h) - value(eps_w=-h)) / (2 * h), rel=1e-5, abs=1e-7)
    fd_x = (value(eps_x=h) - value(eps_x=-h)) / (2 * h)
    assert x.grad[0, 1].item() == pytest.approx(fd_x, rel=1e-5, abs=1e-7)


def test_inverse_raises_when_not_converged():
    t = _block(4, 50.0, hidden=(8,), lipschitz=0.95, max_iter=2)
    x = 3 * torch.randn(5, 3, dtype=D)
    with pytest.raises(ff.InversionError) as info:
        t.inverse(x)
    assert info.value.residual > 1e-10


@pytest.mark.parametrize(
    ("hidden", "scale"),
    [((), 100.0), ((16,), 5.0)],
    ids=["linear-J-norm-0.9", "tanh-mlp"],
)
def test_roulette_estimator_is_unbiased(hidden, scale):
    """Mean of 4000 roulette draws within 3 standard errors of the exact log-det."""
    t = _block(5, scale, hidden=hidden, lipschitz=0.9, activation="tanh", logdet="roulette")
    exact = _exact_twin(t, hidden=hidden, lipschitz=0.9, activation="tanh")
    torch.manual_seed(6)
    z = torch.randn(3, 3, dtype=D)
    n = 4000
    with torch.no_grad():
        truth = exact(z)[1]
        draws = t(z.expand(n, 3, 3))[1]
    mean, se = draws.mean(0), draws.std(0) / n**0.5
    assert torch.isfinite(draws).all()
    assert ((mean - truth).abs() <= 3 * se).all(), (mean, truth, se)
    assert (se < 0.05).all()  # finite, small variance: the default p keeps it finite


def test_series_estimator_within_its_truncation_bias():
    terms, lip, d = 40, 0.9, 3
    t = _block(7, 100.0, hidden=(), lipschitz=lip, logdet="series", terms=terms)
    exact = _exact_twin(t, hidden=(), lipschitz=lip)
    torch.manual_seed(8)
    z = torch.randn(2, 3, dtype=D)
    n = 4000
    with torch.no_grad():
        truth = exact(z)[1]
        draws = t(z.expand(n, 2, 3))[1]
    bias_bound = d * lip ** (terms + 1) / ((terms + 1) * (1 - lip))
    mean, se = draws.mean(0), draws.std(0) / n**0.5
    assert ((mean - truth).abs() <= 3 * se + bias_bound).all(), (mean, truth, se, bias_bound)


def test_estimators_are_differentiable():
    t = _block(9, 5.0, hidden=(8,), logdet="roulette")
    z = torch.randn(16, 3, dtype=D, requires_grad=True)
    t(z)[1].sum().backward()
    grads = [z.grad] + [layer.weight.grad for layer in t.layers]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_residual_flow_density_integrates_to_one():
    torch.manual_seed(10)
    flow = models.ResidualFlow(1, blocks=3, hidden=(16,)).double().eval()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
        grid = torch.linspace(-20, 20, 8001, dtype=D).unsqueeze(-1)
        mass = torch.trapezoid(flow.log_prob(grid).exp(), grid.squeeze(-1))
    assert mass.item() == pytest.approx(1.0, abs=1e-4)


def test_residual_flow_vi_pass_agrees_with_log_prob():
    torch.manual_seed(11)
    flow = models.ResidualFlow(3, blocks=2, hidden=(16,), context_features=2).double()
    context = torch.randn(4, 2, dtype=D)
    x, log_q = flow.rsample_and_log_prob((5,), context)
    assert x.shape == (5, 4, 3)
    assert torch.allclose(flow.log_prob(x, context.expand(5, 4, 2)), log_q, atol=1e-8)
    with pytest.raises(ValueError, match="lipschitz"):
        models.ResidualFlow(2, lipschitz=1.0)
