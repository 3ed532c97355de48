"""The core: Flow methods, composition, inversion, validation, bad input, the checks themselves."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import flowforge as ff
from flowforge import transforms as T
from flowforge.distributions import DiagNormal, StandardNormal, StudentT


def _flow(context_features=None):
    return ff.Flow(
        StandardNormal((2,)),
        [
            T.LULinear(2),
            T.RationalQuadraticSpline(2, bins=8, bound=4.0, context_features=context_features),
            T.LeakyReLU(0.2),
        ],
    )


def test_readme_quick_start_shapes():
    flow = _flow()
    x = flow.sample((1000,))
    lp = flow.log_prob(x)
    assert x.shape == (1000, 2) and lp.shape == (1000,)
    x, lq = flow.rsample_and_log_prob((256,))
    assert x.requires_grad and lq.shape == (256,)
    assert torch.allclose(lq, flow.log_prob(x), atol=1e-4)


def test_log_prob_matches_change_of_variables_by_hand():
    torch.manual_seed(0)
    t = T.Diagonal(2)
    with torch.no_grad():
        t.params.copy_(torch.tensor([[1.0, math.log(2.0)], [-1.0, math.log(0.5)]]))
    flow = ff.Flow(StandardNormal((2,)), [t])
    x = torch.tensor([[3.0, -1.5]])
    z = torch.tensor([[(3.0 - 1.0) / 2.0, (-1.5 + 1.0) / 0.5]])
    expected = torch.distributions.Normal(0, 1).log_prob(z).sum(-1) - math.log(2.0) - math.log(0.5)
    assert torch.allclose(flow.log_prob(x), expected)


def test_flow_density_integrates_to_one_in_1d():
    torch.manual_seed(1)
    flow = ff.Flow(StandardNormal((1,)), [T.RationalQuadraticSpline(1, bins=6, bound=3.0), T.Diagonal(1)])
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    grid = torch.linspace(-25, 25, 200001).unsqueeze(-1)
    with torch.no_grad():
        mass = torch.trapezoid(flow.log_prob(grid).exp(), grid.squeeze(-1))
    assert abs(mass.item() - 1.0) < 1e-3


def test_forward_inverse_and_sample_batch_shapes():
    flow = _flow()
    z = torch.randn(3, 4, 2)
    x, ladj = flow(z)
    z2, ladj2 = flow.inverse(x)
    assert x.shape == (3, 4, 2) and ladj.shape == (3, 4)
    assert torch.allclose(z2, z, atol=1e-5) and torch.allclose(ladj2, -ladj, atol=1e-5)
    assert flow.sample().shape == (2,)
    assert flow.sample((2, 3)).shape == (2, 3, 2)
    assert flow.log_prob(torch.zeros(2)).shape == ()


def test_conditional_flow_context_reaches_the_layer():
    torch.manual_seed(0)
    flow = _flow(context_features=3)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, 2)
    c1, c2 = torch.randn(5, 3), torch.randn(5, 3)
    assert not torch.allclose(flow.log_prob(x, c1), flow.log_prob(x, c2))
    assert flow.sample((7,), context=c1).shape == (7, 5, 2)
    xs, lp = flow.rsample_and_log_prob((7,), context=c1)
    assert torch.allclose(lp, flow.log_prob(xs, c1.expand(7, 5, 3)), atol=1e-4)
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        flow.log_prob(x, torch.randn(5, 4))


def test_as_distribution_is_a_torch_distribution():
    flow = _flow()
    d = flow.as_distribution()
    assert isinstance(d, torch.distributions.Distribution)
    x = d.rsample((10,))
    assert x.shape == (10, 2) and d.log_prob(x).shape == (10,)
    assert d.event_shape == (2,)


def test_inverse_swaps_and_collapses():
    t = T.LULinear(3)
    inv = T.Inverse(t)
    assert T.Inverse(inv) is t and t.inv.base is t
    x = torch.randn(4, 3)
    assert torch.allclose(inv(x)[0], t.inverse(x)[0])


def test_compose_flattens_and_sums():
    a, b, c = T.Diagonal(2), T.Exp(), T.Diagonal(2)
    comp = T.Compose(T.Compose(a, b), c)
    assert len(comp) == 3
    x = torch.randn(4, 2)
    y, ladj = comp(x)
    y1, l1 = a(x)
    y2, l2 = b(y1)
    y3, l3 = c(y2)
    assert torch.allclose(y, y3) and torch.allclose(ladj, l1 + l2 + l3)
    with pytest.raises(TypeError, match="Transform"):
        T.Compose(torch.nn.Linear(2, 2))


def test_shape_errors_name_expected_and_received():
    t = T.LULinear(5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\).*\(3, 4\)"):
        t(torch.randn(3, 4))
    with pytest.raises(ff.ShapeError, match=r"\(\.\.\., 3, H, W\).*\(2, 4, 2, 2\)"):
        T.Invertible1x1Conv(3)(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        StandardNormal((2,)).log_prob(torch.randn(3))


def test_out_of_domain_density_is_minus_inf_never_nan():
    flow = ff.Flow(StandardNormal((2,)), [T.Sigmoid()])
    lp = flow.log_prob(torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.5, 0.0]]))
    assert torch.isfinite(lp[0]) and lp[1] == -math.inf and lp[2] == -math.inf
    assert T.Logit()(torch.tensor([[1.5]]))[1].item() == -math.inf
    x = torch.tensor([[1.5, -0.5]], requires_grad=True)
    flow2 = ff.Flow(StandardNormal((2,)), [T.Exp()])
    out = flow2.log_prob(x)
    assert out.item() == -math.inf
    out.backward()
    assert torch.isfinite(x.grad).all()


def test_validation_rejects_non_finite_inputs_and_can_be_switched_off():
    flow = _flow()
    bad = torch.tensor([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="non-finite"):
        flow.log_prob(bad)
    with ff.validation(False):
        assert torch.isnan(flow.log_prob(bad)).all()
    assert ff.validation_enabled()


def test_spline_tails_never_nan():
    t = T.RationalQuadraticSpline(2, bins=8, bound=3.0)
    with torch.no_grad():
        t.params.normal_()
    x = torch.tensor([[-1e6, 1e6], [-3.0, 3.0], [2.999, -2.999]])
    y, ladj = t(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    assert torch.equal(y[0], x[0]) and ladj[0] == 0


def test_actnorm_initialises_from_first_data_batch_only_when_training():
    torch.manual_seed(0)
    t = T.ActNorm(3)
    data = torch.randn(500, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([2.0, -1.0, 0.0])
    z, _ = t.inverse(data)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(3), atol=1e-3)
    before = t.shift.clone()
    t.inverse(data * 10)
    assert torch.equal(before, t.shift), "re-initialised on a later batch"
    t2 = T.ActNorm(3).eval()
    t2.inverse(data)
    assert not bool(t2.initialized)


def test_iterative_tolerance_and_inversion_error_type():
    err = ff.InversionError("no convergence", residual=1e-3, iterations=50)
    assert isinstance(err, RuntimeError) and err.residual == 1e-3 and "1.000e-03" in str(err)


class _WrongLogDet(T.Transform):
    """A deliberately wrong layer: doubles x but reports log|det| = 0."""

    def __init__(self):
        super().__init__()
        self.event_shape = (2,)

    def _forward(self, x: Tensor, context):
        return 2 * x, x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context):
        return y / 2, y.new_zeros(y.shape[:-1])


class _WrongInverse(T.Transform):
    def __init__(self):
        super().__init__()
        self.event_shape = (2,)

    def _forward(self, x, context):
        return x + 1, x.new_zeros(x.shape[:-1])

    def _inverse(self, y, context):
        return y - 0.999, y.new_zeros(y.shape[:-1])


def test_check_transform_catches_wrong_layers():
    x = torch.randn(4, 2, dtype=torch.float64)
    report = ff.check_transform(_WrongLogDet(), x)
    assert not report.passed and "autograd" in str(report)
    assert abs(report.ladj_error - 2 * math.log(2)) < 1e-9
    report = ff.check_transform(_WrongInverse(), x)
    assert not report.passed and "round trip" in str(report)
    with pytest.raises(AssertionError):
        report.raise_if_failed()


@pytest.mark.parametrize("base", [StandardNormal((3,)), DiagNormal((3,)), StudentT((3,), df=3.0)])
def test_base_distributions_normalised_and_shaped(base):
    torch.manual_seed(0)
    z = base.rsample((4, 5))
    assert z.shape == (4, 5, 3) and base.log_prob(z).shape == (4, 5)
    # Each is a product of 1-D densities: check the 1-D marginal integrates to 1.
    one = type(base)((1,), **({"df": 3.0} if isinstance(base, StudentT) else {}))
    grid = torch.linspace(-300, 300, 600001).unsqueeze(-1)
    with torch.no_grad():
        mass = torch.trapezoid(one.log_prob(grid).exp(), grid.squeeze(-1)).item()
    assert abs(mass - 1) < 2e-3


def test_student_t_matches_torch():
    z = torch.randn(10, 2)
    ours = StudentT((2,), df=4.0).log_prob(z)
    ref = torch.distributions.StudentT(4.0).log_prob(z).sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_flow_moves_to_float64():
    flow = _flow().double()
    x = flow.sample((3,))
    assert x.dtype == torch.float64 and flow.log_prob(x).dtype == torch.float64
