"""flowforge.targets: exact constants re-derived numerically, shapes, loaders, Pyro."""

from __future__ import annotations

import importlib.util
import math
import textwrap

import pytest
import torch

from flowforge import ShapeError, targets
from flowforge.targets import EightSchools, Energy

LOG_2PI = math.log(2 * math.pi)


def grid_log_z(target, lo, hi, n=1201, lo2=None, hi2=None):
    """log of the integral of exp(log_density) over a 2-D box, by the midpoint rule."""
    lo2 = lo if lo2 is None else lo2
    hi2 = hi if hi2 is None else hi2
    h1, h2 = (hi - lo) / n, (hi2 - lo2) / n
    a = torch.linspace(lo + h1 / 2, hi - h1 / 2, n, dtype=torch.float64)
    b = torch.linspace(lo2 + h2 / 2, hi2 - h2 / 2, n, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(a, b, indexing="ij"), -1)
    return (torch.logsumexp(target(pts).reshape(-1), 0) + math.log(h1 * h2)).item()


# -- Rezende & Mohamed's energies ---------------------------------------------------------------
def test_u1_log_z_by_quadrature():
    assert abs(grid_log_z(targets.U1(), -6.0, 6.0, n=1601) - 1.8775) < 5e-4
    assert targets.U1().log_z == pytest.approx(1.8775, abs=5e-5)


@pytest.mark.parametrize("which", ["u2", "u3", "u4"])
def test_u2_to_u4_are_not_normalisable(which):
    # The mass in a box [-L, L] x [-8, 8] grows in proportion to L: log Z keeps growing.
    t = Energy(which)
    assert t.log_z is None
    small = grid_log_z(t, -4.0, 4.0, n=801, lo2=-8.0, hi2=8.0)
    large = grid_log_z(t, -16.0, 16.0, n=1601, lo2=-8.0, hi2=8.0)
    assert abs(large - small - math.log(4)) < 0.1


@pytest.mark.parametrize("which", ["u2", "u3", "u4"])
def test_windowed_energies_have_the_exact_log_z(which):
    t = targets.get(f"{which}-window")
    assert t.name == f"{which}-window"
    assert grid_log_z(t, -8.0, 8.0, n=1601, lo2=-9.0, hi2=9.0) == pytest.approx(t.log_z, abs=1e-4)
    inside = torch.tensor([[-3.9, 0.3], [0.0, -1.0], [3.5, 2.0]], dtype=torch.float64)
    assert torch.equal(t(inside), Energy(which)(inside))  # unchanged on the paper's box
    with pytest.raises(ValueError, match="U1 is normalisable"):
        Energy("u1", window=4.0)


def test_energy_formulas_at_known_points():
    z = torch.tensor([[1.0, 1.0], [-3.0, 1.0], [5.0, 1.0]], dtype=torch.float64)
    # U2 vanishes on its ridge z2 = sin(pi z1 / 2).
    assert torch.allclose(Energy("u2").energy(z), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    # Far from z1 = 1, w2 ~ 0 and U3's two terms coincide: U3 = U2 (0.4 -> 0.35) - log 2.
    far = torch.tensor([[-6.0, 0.3]], dtype=torch.float64)
    d = 0.3 - math.sin(2 * math.pi * -6.0 / 4)
    assert Energy("u3").energy(far).item() == pytest.approx(0.5 * (d / 0.35) ** 2 - math.log(2), abs=1e-9)
    # U1 is symmetric under both sign flips.
    p = torch.randn(50, 2, dtype=torch.float64)
    u1 = targets.U1()
    assert torch.allclose(u1(p), u1(-p)) and torch.allclose(u1(p), u1(p * torch.tensor([1.0, -1.0])))


# -- eight schools ------------------------------------------------------------------------------
def integrate_theta_then_grid(target: EightSchools) -> float:
    """log p(y): theta integrated exactly (its conditional is Gaussian), (mu, log tau) on a grid.

    Uses the target's own log-density at the conditional mode of theta, so it checks the
    target's code and constants, independently of the package's quadrature.
    """
    y, s = (torch.as_tensor(v, dtype=torch.float64) for v in (target.y, target.sigma))
    mu = torch.linspace(-25, 35, 601, dtype=torch.float64)
    lt = torch.linspace(-12, 7, 761, dtype=torch.float64)
    m, u = (g.reshape(-1, 1) for g in torch.meshgrid(mu, lt, indexing="ij"))
    tau = torch.exp(u)
    prec = 1 / s**2 + 1 / tau**2  # of theta | mu, tau, y
    theta = (y / s**2 + m / tau**2) / prec
    if target.centered:
        x, log_det = theta, torch.log(prec).sum(-1)
    else:  # theta~ = (theta - mu) / tau has precision tau^2 prec
        x, log_det = (theta - m) / tau, torch.log(tau**2 * prec).sum(-1)
    z = torch.cat([x, m, u], -1)
    laplace = target(z) + 0.5 * target.J * LOG_2PI - 0.5 * log_det
    cell = (mu[1] - mu[0]) * (lt[1] - lt[0])
    return (torch.logsumexp(laplace, 0) + torch.log(cell)).item()


@pytest.mark.parametrize("centered", [True, False])
def test_eight_schools_log_evidence(centered):
    t = EightSchools(centered=centered)
    assert t.log_z == pytest.approx(-31.3113, abs=1e-4)
    assert integrate_theta_then_grid(t) == pytest.approx(-31.3113, abs=1e-3)


def test_two_school_reduction():
    t = targets.get("two-schools-noncentered")
    assert t.dim == 4 and t.names == ["theta_tilde1", "theta_tilde2", "mu", "log_tau"]
    assert t.y.tolist() == [28.0, 8.0] and t.sigma.tolist() == [15.0, 10.0]
    assert integrate_theta_then_grid(t) == pytest.approx(t.log_z, abs=1e-3)
    assert t.log_z == pytest.approx(-8.7801, abs=1e-4)


def test_centred_and_noncentred_are_one_change_of_variables():
    c, nc = EightSchools(centered=True), EightSchools(centered=False)
    torch.manual_seed(0)
    z = torch.randn(20, 10, dtype=torch.float64) * torch.tensor([1.0] * 8 + [5.0, 1.0], dtype=torch.float64)
    theta = nc.to_original(z)
    zc = c.from_original(theta)
    # p_nc(theta~, mu, log tau) = p_c(mu + tau theta~, mu, log tau) * tau^8
    assert torch.allclose(nc(z), c(zc) + 8 * z[:, -1], atol=1e-10)
    assert torch.allclose(nc.from_original(theta), z, atol=1e-12)


def test_reference_draws_match_source_and_exact_sampler():
    t = EightSchools(centered=True)
    ref = t.reference_draws()
    assert ref.shape == (10_000, 10) and ref.dtype == torch.float64
    assert ref[:, 8].mean().item() == pytest.approx(4.40, abs=0.02)  # SOURCE.md summaries
    assert ref[:, 9].mean().item() == pytest.approx(0.80, abs=0.02)
    exact = t.from_original(torch.as_tensor(targets.posterior_draws(t.y, t.sigma, 10_000, seed=1)))
    # NUTS and exact draws agree within a few Monte Carlo standard errors.
    assert abs(exact[:, 8].mean() - ref[:, 8].mean()).item() < 0.2
    assert abs(exact[:, 9].mean() - ref[:, 9].mean()).item() < 0.1
    assert exact[:, 9].std().item() == pytest.approx(ref[:, 9].std().item(), rel=0.05)


# -- the exactly normalised synthetic targets ---------------------------------------------------
def test_funnel_is_normalised_and_draws_follow_it():
    t = targets.Funnel()
    draws = t.reference_draws()
    entropy = 0.5 * math.log(2 * math.pi * math.e * 9) + 9 * 0.5 * math.log(2 * math.pi * math.e)
    # E[log p] = -H. Adding 4.5 v (mean zero) removes most of the variance of log p: its
    # Monte Carlo error drops from about 0.14 to about 0.02.
    assert (t(draws) + 4.5 * draws[:, 0]).mean().item() == pytest.approx(-entropy, abs=0.1)
    # (a grid cannot resolve the neck; the constant enters E[log p] above, so it is checked there)


@pytest.mark.parametrize("name", ["banana", "mixture"])
def test_two_d_targets_are_normalised(name):
    t = targets.get(name)
    assert t.log_z == 0.0
    assert grid_log_z(t, -12.0, 12.0, n=1601, lo2=-12.0, hi2=45.0) == pytest.approx(0.0, abs=1e-4)
    draws = t.reference_draws()
    assert draws.shape == (10_000, 2)
    assert torch.isfinite(t(draws)).all()


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_every_registered_target_takes_any_batch_shape(name):
    t = targets.get(name)
    torch.manual_seed(0)
    for batch in [(), (5,), (3, 4)]:
        z = torch.randn(*batch, t.dim, dtype=torch.float64, requires_grad=True)
        out = t(z)
        assert out.shape == batch and out.dtype == torch.float64
        (g,) = torch.autograd.grad(out.sum(), z)
        assert torch.isfinite(g).all()
    assert t(torch.randn(4, t.dim)).dtype == torch.float32
    with pytest.raises(ShapeError, match=rf"\(\*batch, {t.dim}\)"):
        t(torch.zeros(3, t.dim + 1))


# -- user targets --------------------------------------------------------------------------------
def test_from_callable_and_from_string(tmp_path):
    t = targets.from_callable(lambda z: -0.5 * (z**2).sum(-1), 3, log_z=1.5 * LOG_2PI, name="gauss")
    assert t(torch.zeros(3)).item() == 0.0 and t.names == ["z1", "z2", "z3"]
    bad = targets.from_callable(lambda z: z, 2)
    with pytest.raises(ShapeError, match="expected \\(4,\\)"):
        bad(torch.zeros(4, 2))
    path = tmp_path / "my_model.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from flowforge import targets

            def logp(z):
                return -(z**2).sum(-1)

            logp.dim = 2
            ready = targets.from_callable(logp, 2, name="ready")
            """
        )
    )
    assert targets.get(f"{path}:logp").dim == 2
    assert targets.from_string(f"{path}:logp", dim=5).dim == 5
    assert targets.from_string(f"{path}:ready").name == "ready"
    assert targets.from_string("flowforge.targets:Banana", dim=3).dim == 3
    with pytest.raises(ValueError, match="give its dimension"):
        targets.from_string("math:hypot")
    with pytest.raises(ValueError, match=r"unknown target 'u5'.*'u1'"):
        targets.get("u5")


@pytest.mark.skipif(importlib.util.find_spec("pyro") is None, reason="pyro-ppl is not installed")
def test_from_pyro_matches_the_hand_written_eight_schools():
    import pyro
    import pyro.distributions as dist

    y, sigma = (torch.as_tensor(v, dtype=torch.float64) for v in targets.eight_schools_data())

    def model(y, sigma):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=torch.float64)))
        with pyro.plate("schools", 8):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            pyro.sample("y", dist.Normal(theta, sigma), obs=y)

    t = targets.from_pyro(model, y, sigma)
    assert t.dim == 10 and t.names[:2] == ["mu", "tau"] and t.names[2] == "theta[0]"
    torch.manual_seed(0)
    z = torch.randn(6, 10, dtype=torch.float64)
    ours = EightSchools(centered=True)(torch.cat([z[:, 2:], z[:, :2]], -1))
    assert torch.allclose(t(z), ours, atol=1e-9)
    assert t.unflatten(z[0])["tau"].item() == pytest.approx(math.exp(z[0, 1].item()))


@pytest.mark.skipif(importlib.util.find_spec("pyro") is None, reason="pyro-ppl is not installed")
def test_from_pyro_uses_pyro_constraint_transforms():
    import pyro
    import pyro.distributions as dist

    def model():
        pyro.sample("w", dist.Dirichlet(torch.ones(3, dtype=torch.float64)))  # simplex: 2 free coordinates
        pyro.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=torch.float64)))

    t = targets.from_pyro(model)
    assert t.dim == 3 and t.names == ["w[0]", "w[1]", "s"]
    u = torch.randn(4, 3, dtype=torch.float64)
    w = torch.stack([torch.as_tensor(t.unflatten(v)["w"]) for v in u])
    assert torch.allclose(w.sum(-1), torch.ones(4, dtype=torch.float64)) and (w > 0).all()
    # the HalfNormal through exp: log N+(e^u) + u
    s = u[:, 2]
    expected_s = 0.5 * math.log(2 / math.pi) - 0.5 * torch.exp(2 * s) + s
    without_s = torch.stack([t(torch.cat([v[:2], v.new_zeros(1)])) for v in u])
    expected_0 = 0.5 * math.log(2 / math.pi) - 0.5
    assert torch.allclose(t(u) - without_s, expected_s - expected_0, atol=1e-10)


def test_from_pyro_without_pyro_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pyro", None)
    with pytest.raises(ImportError, match=r"pip install 'flowforge\[pyro\]'"):
        targets.from_pyro(lambda: None)
