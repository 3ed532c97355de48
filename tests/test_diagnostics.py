"""flowforge.diagnostics: analytic cases for every estimator, and issue 13's dropped-mode checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

import flowforge as ff
from flowforge import diagnostics as D
from flowforge import targets
from flowforge import transforms as T

LOG_2PI = math.log(2 * math.pi)


def gaussian_flow(loc=(0.0, 0.0), log_scale=(0.0, 0.0), dtype=torch.float32) -> ff.Flow:
    """q = N(loc, diag(exp(2 log_scale))) as a flow."""
    flow = ff.Flow(ff.distributions.StandardNormal((len(loc),)), [T.Diagonal(len(loc))]).to(dtype)
    with torch.no_grad():
        flow.transform[0].params[:, 0] = torch.tensor(loc)
        flow.transform[0].params[:, 1] = torch.tensor(log_scale)
    return flow


def std_normal_target(d=2, shift=0.0, log_z=0.0):
    def logp(z):
        return -0.5 * ((z - shift) ** 2).sum(-1) - 0.5 * d * LOG_2PI + log_z

    draws = torch.randn(20000, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + shift
    return targets.from_callable(logp, d, log_z=log_z, draws=draws, name="gauss")


# -- PSIS -----------------------------------------------------------------------------------------
def test_psis_khat_matches_the_tail_index():
    # q = N(0, 1), p = N(0, s^2): the weights have Pareto tail index k = 1 - 1/s^2.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g, dtype=torch.float64)
    heavy = D.psis(-0.5 * x**2 / 4.0 + 0.5 * x**2)  # s^2 = 4: k = 0.75
    light = D.psis(-0.5 * x**2 / 1.25 + 0.5 * x**2)  # s^2 = 1.25: k = 0.2
    assert 0.6 < heavy.khat < 0.9 and not heavy.reliable
    assert 0.05 < light.khat < 0.35 and light.reliable
    assert math.isclose(torch.logsumexp(light.log_weights, 0).item(), 0.0, abs_tol=1e-9)


def test_psis_ess_of_a_shifted_gaussian():
    # q = N(0, 1), p = N(0.5, 1): ESS / n -> 1 / E_q[w^2] = exp(-0.25) = 0.7788.
    x = torch.randn(40000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = D.psis(0.5 * x - 0.125)
    assert r.ess_fraction == pytest.approx(math.exp(-0.25), abs=0.02)
    assert r.khat < 0.5


def test_psis_edge_cases():
    const = D.psis(torch.full((500,), 3.0))
    assert const.khat == -math.inf and const.ess == 500
    with_zeros = torch.randn(2000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with_zeros[:1000] = -math.inf  # half the draws have zero target density
    r = D.psis(with_zeros)
    assert math.isfinite(r.khat) and r.ess < 1000
    few = torch.full((1000,), -math.inf)
    few[:5] = torch.tensor([0.0, 1.0, 2.0, 0.5, 0.1])
    assert D.psis(few).khat == math.inf
    with pytest.raises(ValueError, match="NaN"):
        D.psis(torch.tensor([0.0] * 20 + [math.nan]))
    with pytest.raises(ValueError, match="at least 10"):
        D.psis(torch.zeros(5))


# -- ELBO and importance sampling -----------------------------------------------------------------
def test_elbo_equals_log_z_minus_kl():
    # q = N(0, I), p = N(1, I) * e^2: KL = d / 2 = 1, ELBO = 2 - 1.
    t = std_normal_target(shift=1.0, log_z=2.0)
    est = D.elbo(gaussian_flow(), t, samples=20000)
    assert abs(est.elbo - 1.0) < 4 * est.se and est.gap == pytest.approx(1.0, abs=4 * est.se)
    exact = D.elbo(gaussian_flow(), std_normal_target(), samples=1000)
    assert abs(exact.gap) < 1e-5 and exact.se < 1e-5
    cut = targets.from_callable(lambda z: torch.where(z[:, 0] > 0, -(z**2).sum(-1), -math.inf), 2)
    half = D.elbo(gaussian_flow(), cut, samples=2000)
    assert 800 < half.nonfinite < 1200 and half.n + half.nonfinite == 2000


def test_importance_log_z_and_reweighted_moments_correct_a_wide_flow():
    # Two modes at (+-4, 0) with sd 0.5: mean 0, sds (sqrt(16.25), 0.5). The flow is a wide
    # Gaussian, so the weights are bounded and reweighting recovers both moments and log Z.
    t = targets.GaussianMixture(components=2, radius=4.0, scale=0.5, weights=(0.3, 0.7))
    draws = D.draw(gaussian_flow(loc=(0.0, 0.0), log_scale=(math.log(5.0), 0.0)), t, 40000, seed=0)
    z = D.log_z(draws.log_w)
    assert abs(z.log_z - 0.0) < 4 * z.se and z.se < 0.03 and z.khat < 0.5
    mean, sd = D.reweighted_moments(draws.x, draws.log_w)
    exact_mean = 4 * (0.3 - 0.7)
    exact_sd = math.sqrt(0.25 + 16 - exact_mean**2)
    assert mean[0].item() == pytest.approx(exact_mean, abs=0.1) and abs(mean[1].item()) < 0.05
    assert sd.tolist() == pytest.approx([exact_sd, 0.5], rel=0.05)
    assert draws.x.mean(0)[0].abs() < 0.2  # the flow's own mean is wrong; reweighting fixes it


# -- against reference draws ----------------------------------------------------------------------
def test_moment_errors_and_wasserstein():
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    same = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    shifted = same + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    err, ratio = D.moment_errors(shifted, ref)
    assert err[0].item() == pytest.approx(1.0, abs=0.06) and err[1:].abs().max() < 0.06
    assert (ratio - 1).abs().max() < 0.06
    floor, far = D.wasserstein2(same, ref, max_points=800), D.wasserstein2(shifted, ref, max_points=800)
    assert far > floor + 0.4  # a shift of one sd in one coordinate adds about 1 to W2^2


def test_forward_fit_sees_a_dropped_mode():
    t = targets.GaussianMixture(components=2, radius=4.0, scale=0.5)
    one = gaussian_flow(loc=(4.0, 0.0), log_scale=(math.log(0.5), math.log(0.5)))
    fwd = D.forward_fit(one, t, t.reference_draws())
    assert fwd.low_q_share == pytest.approx(0.5, abs=0.03) and fwd.forward_kl > 5
    exact = D.forward_fit(gaussian_flow(), std_normal_target(), std_normal_target().reference_draws())
    assert abs(exact.forward_kl) < 1e-4 and exact.low_q_share == 0.0
    assert exact.eubo == pytest.approx(0.0, abs=1e-4)


# -- Jacobian ---------------------------------------------------------------------------------------
def test_jacobian_singular_values_and_report():
    torch.manual_seed(0)
    t = T.LULinear(3).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.5 * torch.randn_like(p))
    z = torch.randn(5, 3, dtype=torch.float64)
    sv = D.jacobian_singular_values(t, z)
    jac = torch.autograd.functional.jacobian(lambda v: t(v)[0], z[0])
    assert torch.allclose(sv[0], torch.linalg.svdvals(jac)) and torch.allclose(sv, sv[0].expand(5, 3))
    flow = ff.Flow(ff.distributions.StandardNormal((3,)), [t, T.RationalQuadraticSpline(3, bins=5)]).double()
    report = D.jacobian_report(flow, z)
    assert report.check_passed and report.roundtrip_error < 1e-10 and report.ladj_error < 1e-8
    assert report.log10_condition_max == pytest.approx(
        math.log10((sv[:, 0] / sv[:, -1]).max().item()), abs=1.0
    )
    assert D.roundtrip_error(flow, z).max() < 1e-10


# -- issue 13: what PSIS misses ---------------------------------------------------------------------
def fit(layers, log_density, steps, lr, seed=0) -> ff.Flow:
    torch.manual_seed(seed)
    flow = ff.Flow(ff.distributions.StandardNormal((2,)), layers)
    ff.fit_vi(flow, log_density, steps=steps, lr=lr, samples=128, progress=False, seed=seed)
    return flow


def splines(k: int) -> list:
    return [
        layer for _ in range(k) for layer in (T.LULinear(2), T.RationalQuadraticSpline(2, bins=8, bound=5.0))
    ]


def test_u1_with_one_mode_dropped_is_flagged():
    u1 = targets.U1()
    # Fit a Gaussian to the right half of U1 only: it holds one of the two modes.
    right = targets.from_callable(lambda z: torch.where(z[:, 0] > 0, u1(z), -math.inf), 2)
    flow = fit([T.Diagonal(2)], right, steps=400, lr=0.05)
    out = D.diagnose(flow, u1, samples=4000, defensive_samples=20000)
    assert out["elbo"] < u1.log_z - math.log(2) + 0.05  # at most the mass of one mode
    assert 0.3 < out["defensive"]["missing_mass"] < 0.7
    assert out["defensive"]["where"][0] < -1.0  # the missed mass is on the left
    assert out["status"] == "misses" and out["verdict"].startswith("fit misses mass (estimated")


def test_u1_with_both_modes_is_not_flagged():
    u1 = targets.U1()
    flow = fit(splines(2), u1, steps=300, lr=0.02)
    out = D.diagnose(flow, u1, samples=4000, defensive_samples=20000)
    assert out["elbo"] > u1.log_z - math.log(2) + 0.1  # more than one mode's worth
    assert out["defensive"]["missing_mass"] < 0.1
    assert out["status"] == "covers" and out["verdict"].startswith("fit covers the posterior")


def test_a_correct_fit_of_a_gaussian_is_not_flagged():
    t = std_normal_target(d=2, shift=1.5, log_z=-3.0)
    flow = fit([T.Diagonal(2)], t, steps=300, lr=0.05)
    out = D.diagnose(flow, t, samples=4000, defensive_samples=20000, jacobian_points=8)
    assert next(flow.parameters()).dtype == torch.float32  # diagnosed on a float64 copy
    assert out["jacobian"]["check_passed"] and out["jacobian"]["log10_condition_max"] < 2
    assert out["status"] == "covers" and out["defensive"]["missing_mass"] < 0.02
    assert out["kl"] < 0.01 and out["khat"] < 0.5 and not out["warnings"]
    assert out["reference"]["low_q_share"] < 0.01 and abs(out["reference"]["forward_kl"]) < 0.02
    json.dumps(out)  # metrics.json-ready


def test_restarts_on_different_modes_disagree():
    t = targets.GaussianMixture(components=2, radius=4.0, scale=0.5)
    s = (math.log(0.5), math.log(0.5))
    left, right = gaussian_flow((-4.0, 0.0), s), gaussian_flow((4.0, 0.0), s)
    r = D.restart_agreement([right, left, gaussian_flow((4.0, 0.0), s)], t)
    assert not r.agree and r.elbo_spread < 0.05  # same ELBO, different modes: only cross-evaluation sees it
    assert r.disjoint_share[0][1] > 0.99 and r.disjoint_share[0][2] < 0.01
    assert {(d["i"], d["j"]) for d in r.disagreements} == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert r.kl[0][2] == pytest.approx(0.0, abs=1e-6)
    v = D.verdict(restarts=r, defensive=D.defensive_is(right, t))
    assert v.status == "disagree" and "misses 100% of fit" in v.line
    same = D.restart_agreement([right, gaussian_flow((4.0, 0.0), s)], t)
    assert same.agree and not same.disagreements


def test_verdict_lines_and_khat_warning():
    d = D.DefensiveResult(0.02, 0.01, None, 0.01, 0.0, 0.01, 0.0, 0.3, 9000.0, 20000, 0.5)
    assert D.verdict(defensive=d, khat=0.3).status == "covers"
    d.missing_mass = 0.4
    v = D.verdict(defensive=d, khat=0.75, ess_fraction=0.4)
    assert v.status == "misses" and "estimated 40% ± 1%" in v.line and "k-hat 0.75" in v.line
    assert len(v.warnings) == 1 and "k-hat 0.75 > 0.7" in v.warnings[0]
    assert D.verdict().status == "unchecked"
