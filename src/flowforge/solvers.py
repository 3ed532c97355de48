"""Numerical solvers behind the iterative inverses: scalar root finding and fixed points.

Two solvers, both batched (every element or every sample is solved at once) and both
*honest*: they either reach their tolerance or raise :class:`~flowforge.InversionError`
carrying the residual they reached, never returning a wrong answer silently.

- :func:`solve_increasing` finds ``a`` with ``f(a) = target`` elementwise for a strictly
  increasing scalar function ``f`` (planar and Sylvester inverses). It brackets the root
  (expanding the bracket geometrically when needed) and then takes Newton steps,
  falling back to bisection whenever a Newton step would leave the bracket, so it
  converges for every increasing ``f`` and quadratically near a smooth root.
- :func:`fixed_point` iterates ``z <- fn(z)`` for a contraction ``fn`` (invertible
  residual blocks), with gradients by implicit differentiation (an adjoint fixed point in
  the backward pass) instead of backpropagating through the iterations.

Both run their iterations without building an autograd graph; gradients come from one
differentiable step at the solution (the implicit function theorem), so memory does not
grow with the number of iterations.

Tolerances are relative: a residual ``r`` is accepted when ``|r| <= tol * (1 + |target|)``.
A ``tol`` below what the dtype can resolve is raised to ``64 * eps`` of the dtype (so the
float64 default ``1e-10`` becomes about ``7.6e-6`` in float32 rather than failing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .errors import InversionError

__all__ = ["effective_tol", "fixed_point", "solve_increasing"]


def effective_tol(tol: float, dtype: torch.dtype) -> float:
    """``max(tol, 64 * eps(dtype))``: the tolerance a solver can actually reach in ``dtype``.

    Examples:
        >>> import torch
        >>> effective_tol(1e-10, torch.float64)
        1e-10
        >>> effective_tol(1e-10, torch.float32) > 1e-6
        True
    """
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol!r}")
    return max(float(tol), 64 * torch.finfo(dtype).eps)


def _check_iter(max_iter: int) -> int:
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
    return int(max_iter)


def solve_increasing(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    *,
    lower: Tensor | None = None,
    upper: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
    max_expansions: int = 200,
) -> Tensor:
    """Solve ``f(a) = target`` elementwise for a strictly increasing ``f``.

    Safeguarded Newton (Numerical Recipes' ``rtsafe`` idea): keep a bracket
    ``[lo, hi]`` with ``f(lo) <= target <= f(hi)``, take the Newton step when it stays
    inside the bracket and bisect otherwise. Without a given bracket, one is grown around
    ``target`` by doubling its half-width (``f(a) - a`` bounded or slowly growing, as in
    every layer here, keeps this short).

    Gradients: the iterations run without a graph; a last Newton step
    ``a - (f(a) - target) / f'(a)`` is taken *with* the graph at the solution, which both
    polishes the root and gives the exact implicit derivatives with respect to ``target``
    and to whatever ``fn`` closes over (the layer's parameters).

    Args:
        fn: ``a -> (f(a), f'(a))``, elementwise, broadcasting like ``target``.
        target: the right-hand side, any shape.
        lower, upper: an optional starting bracket (broadcastable to ``target``); it is
            expanded if it does not contain the root.
        tol: relative tolerance on the residual, ``|f(a) - target| <= tol (1 + |target|)``
            (raised to :func:`effective_tol` for the dtype).
        max_iter: maximum Newton/bisection iterations.
        max_expansions: maximum bracket doublings.

    Returns:
        The root, shape of ``target``.

    Raises:
        InversionError: no bracket could be found, or the residual is above tolerance
            after ``max_iter`` iterations; its ``residual`` is the largest one reached.

    Cost: O(n) per iteration; typically 5-15 iterations in float64.

    References:
        Press, Teukolsky, Vetterling, Flannery. "Numerical Recipes", 3rd ed., sec. 9.4
        (Newton-Raphson with bracketing).

    Examples:
        >>> import torch
        >>> f = lambda a: (a + torch.tanh(a), 1 + 1 / torch.cosh(a) ** 2)
        >>> a = solve_increasing(f, torch.tensor([0.0, 1.0, -30.0], dtype=torch.float64))
        >>> torch.allclose(f(a)[0], torch.tensor([0.0, 1.0, -30.0], dtype=torch.float64))
        True
    """
    max_iter = _check_iter(max_iter)
    t = target.detach()
    atol = effective_tol(tol, t.dtype) * (1 + t.abs())
    with torch.no_grad():
        lo = (t - 1) if lower is None else lower.detach().expand_as(t).clone()
        hi = (t + 1) if upper is None else upper.detach().expand_as(t).clone()
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        lo, hi = _bracket(fn, t, lo, hi, max_expansions)
        a = 0.5 * (lo + hi)
        done = torch.zeros_like(t, dtype=torch.bool)
        res = torch.full_like(t, float("inf"))
        for _ in range(max_iter):
            f, df = fn(a)
            res = f - t
            # A collapsed bracket is the best the dtype can do: accept it.
            tiny = (hi - lo) <= 4 * torch.finfo(t.dtype).eps * (1 + a.abs())
            done = (res.abs() <= atol) | tiny
            if bool(done.all()):
                break
            below = res < 0
            lo = torch.where(below & ~done, a, lo)
            hi = torch.where(~below & ~done, a, hi)
            step = a - res / df
            ok = torch.isfinite(step) & (step > lo) & (step < hi)
            a = torch.where(done, a, torch.where(ok, step, 0.5 * (lo + hi)))
        if not bool(done.all()):
            worst = float(res.abs()[~done].max()) if res.numel() else float("nan")
            raise InversionError(
                f"root solve did not reach tol={tol:g} in max_iter={max_iter} iterations "
                f"({int((~done).sum())} of {t.numel()} elements left); raise max_iter or tol",
                residual=worst,
                iterations=max_iter,
            )
    # One more Newton step at the solution: it polishes the root (quadratic convergence)
    # and, taken with the graph, carries the exact implicit gradients.
    f, df = fn(a)
    step = (f - target) / df
    return a - torch.where(torch.isfinite(step), step, torch.zeros_like(step))


def _bracket(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]], t: Tensor, lo: Tensor, hi: Tensor, max_expansions: int
) -> tuple[Tensor, Tensor]:
    for _ in range(max_expansions + 1):
        f_lo, f_hi = fn(lo)[0], fn(hi)[0]
        bad_lo, bad_hi = f_lo > t, f_hi < t
        if not bool((bad_lo | bad_hi).any()):
            return lo, hi
        width = hi - lo
        lo = torch.where(bad_lo, lo - width, lo)
        hi = torch.where(bad_hi, hi + width, hi)
    bad = bad_lo | bad_hi
    gap = torch.where(bad_lo, f_lo - t, t - f_hi)
    raise InversionError(
        f"could not bracket the root of an increasing function for {int(bad.sum())} element(s) after "
        f"{max_expansions} bracket doublings (the function may not be increasing or not finite)",
        residual=float(gap[bad].max()),
        iterations=max_expansions,
    )


def fixed_point(
    fn: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    event_dim: int = 1,
    tol: float = 1e-10,
    max_iter: int = 500,
) -> Tensor:
    """Solve ``z = fn(z)`` by iterating ``z <- fn(z)`` from ``z0`` (Banach fixed point).

    Converges for any contraction ``fn`` (Lipschitz constant ``L < 1``); the error after
    ``k`` steps is at most ``L^k / (1 - L)`` times the first step. A sample stops when
    ``max |fn(z) - z| <= tol (1 + max |z|)`` over its event.

    Gradients (when autograd is on): the returned tensor is ``fn(z*)`` evaluated with the
    graph at the solution, and a hook replaces its incoming gradient ``u`` by the
    solution ``w`` of the adjoint fixed point ``w = u + J_fn(z*)^T w`` (iterated with the
    same tolerance). That is exact implicit differentiation: ``dz*/dx = (I - J_fn)^{-1}
    dfn/dx`` for whatever ``fn`` closes over, at the memory of one evaluation.

    Args:
        fn: the contraction, mapping tensors of the shape of ``z0`` to the same shape.
        z0: the starting point, shape ``(*batch, *event)``.
        event_dim: number of trailing event dimensions (residuals are per sample).
        tol: relative tolerance (raised to :func:`effective_tol` for the dtype).
        max_iter: maximum iterations.

    Returns:
        The fixed point, shape of ``z0``.

    Raises:
        InversionError: the tolerance was not reached in ``max_iter`` iterations; its
            ``residual`` is the largest per-sample residual reached.

    Cost: one evaluation of ``fn`` per iteration; about ``log(tol) / log(L)`` iterations.

    References:
        Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen. "Invertible Residual Networks". ICML 2019.
        Bai, Kolter, Koltun. "Deep Equilibrium Models". NeurIPS 2019 (implicit gradients).

    Examples:
        >>> import torch
        >>> z = fixed_point(lambda z: 1 + 0.5 * torch.sin(z), torch.zeros(3, 1, dtype=torch.float64))
        >>> torch.allclose(z, 1 + 0.5 * torch.sin(z))
        True
    """
    max_iter = _check_iter(max_iter)
    eff = effective_tol(tol, z0.dtype)
    dims = tuple(range(-event_dim, 0)) if event_dim else ()

    def norm(v: Tensor) -> Tensor:
        return v.abs().amax(dim=dims) if dims else v.abs()

    with torch.no_grad():
        z = z0.detach()
        res = torch.full(z.shape[: z.dim() - event_dim], float("inf"), dtype=z.dtype, device=z.device)
        for _ in range(max_iter):
            z_new = fn(z)
            res = norm(z_new - z)
            z = z_new
            if bool((res <= eff * (1 + norm(z))).all()):
                break
        else:
            raise InversionError(
                f"fixed-point iteration did not reach tol={tol:g} in max_iter={max_iter} iterations "
                "(is the map a contraction? raise max_iter or tol)",
                residual=float(res.max()) if res.numel() else float("nan"),
                iterations=max_iter,
            )
    if not torch.is_grad_enabled():
        return z
    out = fn(z)
    if not out.requires_grad:
        return out
    z_leaf = z.detach().requires_grad_(True)
    with torch.enable_grad():
        f_leaf = fn(z_leaf)

    def adjoint(u: Tensor) -> Tensor:
        w = u
        for _ in range(max_iter):
            vjp = torch.autograd.grad(f_leaf, z_leaf, w, retain_graph=True)[0]
            w_new = u + vjp
            if bool((norm(w_new - w) <= eff * (1 + norm(w_new))).all()):
                return w_new
            w = w_new
        raise InversionError(
            "adjoint fixed point of the implicit gradient did not converge",
            residual=float(norm(w_new - w).max()),
            iterations=max_iter,
        )

    out.register_hook(adjoint)
    return out
