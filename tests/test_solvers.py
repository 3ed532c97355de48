"""flowforge.solvers: bracketed Newton root finding and fixed points, their gradients and failures."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge.solvers import effective_tol, fixed_point, solve_increasing

D = torch.float64


def _cubic(a):
    # Increasing, unbounded, with a nearly flat inflection at 0: Newton alone overshoots there.
    return a**3 + 1e-3 * a, 3 * a**2 + 1e-3


def test_root_solve_reaches_tolerance_far_from_the_start():
    target = torch.tensor([-1e6, -3.0, 0.0, 1e-9, 2.5, 7e5], dtype=D)
    a = solve_increasing(_cubic, target, tol=1e-12)
    assert torch.allclose(_cubic(a)[0], target, rtol=1e-11, atol=1e-12)


def test_root_solve_with_kinks_and_flat_pieces():
    # Piecewise linear with slopes 1e-3 and 1: Newton steps leave the bracket, bisection saves it.
    def f(a):
        return torch.where(a > 0, a, 1e-3 * a), torch.where(
            a > 0, torch.ones_like(a), torch.full_like(a, 1e-3)
        )

    target = torch.linspace(-2, 2, 41, dtype=D)
    a = solve_increasing(f, target)
    assert torch.allclose(f(a)[0], target, atol=1e-10)


def test_root_solve_gradients_are_the_implicit_ones():
    # f(a; k) = a + k tanh(a): da/dt = 1 / f'(a), da/dk = -tanh(a) / f'(a).
    k = torch.tensor(0.7, dtype=D, requires_grad=True)
    t = torch.tensor([0.3, -2.0], dtype=D, requires_grad=True)
    a = solve_increasing(lambda a: (a + k * torch.tanh(a), 1 + k / torch.cosh(a) ** 2), t)
    a.sum().backward()
    fprime = 1 + k.detach() / torch.cosh(a.detach()) ** 2
    assert torch.allclose(t.grad, 1 / fprime)
    assert torch.allclose(k.grad, (-torch.tanh(a.detach()) / fprime).sum())


def test_root_solve_raises_with_the_residual():
    with pytest.raises(ff.InversionError) as info:
        solve_increasing(_cubic, torch.tensor([5e3], dtype=D), max_iter=1)
    assert info.value.residual > 0 and info.value.iterations == 1
    with pytest.raises(ff.InversionError, match="bracket"):
        # Bounded above by 1: no root for a target of 2.
        solve_increasing(lambda a: (torch.tanh(a), 1 / torch.cosh(a) ** 2), torch.tensor([2.0], dtype=D))


def test_fixed_point_and_its_implicit_gradient():
    torch.manual_seed(0)
    w = torch.randn(3, 3, dtype=D)
    w = (0.6 * w / torch.linalg.matrix_norm(w, 2)).requires_grad_()  # a contraction
    x = torch.randn(5, 3, dtype=D, requires_grad=True)
    z = fixed_point(lambda z: x - torch.tanh(z @ w.T), x, tol=1e-12)
    assert torch.allclose(z + torch.tanh(z @ w.T), x, atol=1e-10)
    z.sum().backward()
    # Reference: dz/dx = (I + J_g)^{-1} per sample, J_g = diag(1 - tanh^2) W.
    zd = z.detach()
    jac = (1 - torch.tanh(zd @ w.detach().T) ** 2).unsqueeze(-1) * w.detach()
    ref = torch.linalg.solve(torch.eye(3, dtype=D) + jac.transpose(-1, -2), torch.ones(5, 3, dtype=D))
    assert torch.allclose(x.grad, ref, atol=1e-9)
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_fixed_point_raises_when_it_cannot_converge():
    x = torch.randn(4, 2, dtype=D)
    with pytest.raises(ff.InversionError) as info:
        fixed_point(lambda z: x - 0.9 * torch.sin(z), x, max_iter=1)
    assert info.value.iterations == 1 and info.value.residual > 0
    with pytest.raises(ff.InversionError):
        fixed_point(lambda z: 2 * z + 1, x, max_iter=50)  # expanding: no convergence


def test_tolerances_follow_the_dtype():
    assert effective_tol(1e-10, torch.float64) == 1e-10
    assert effective_tol(1e-10, torch.float32) == 64 * torch.finfo(torch.float32).eps
    with pytest.raises(ValueError, match="tol"):
        effective_tol(0.0, torch.float64)
    # float32 with the float64 default still converges instead of raising.
    a = solve_increasing(_cubic, torch.tensor([3.0, -40.0]))
    assert torch.allclose(_cubic(a)[0], torch.tensor([3.0, -40.0]), rtol=1e-5)
