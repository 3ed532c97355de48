"""Sylvester flows (van den Berg et al. 2018; seed 000) with an exact, iterative inverse.

Householder flows (Tomczak & Welling 2016, seed 000's ``f_hh``) need no layer of their own
here: they are products of reflections ``I - 2 v v^T``, which the linear
:class:`~flowforge.transforms.Householder` already is (``reflections=k``), and
:func:`flowforge.models.HouseholderFlow` puts it over a trainable diagonal Gaussian as they
did. The same reflections parameterise ``Q`` in ``kind="householder"`` below (H-SNF).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..solvers import solve_increasing
from .base import Transform
from .planar import MARGIN, Activation

__all__ = ["Sylvester"]

_KINDS = ("orthogonal", "householder", "triangular")


class Sylvester(Transform):
    """Sylvester layer ``x = z + Q R h(R~ Q^T z + b)``: a planar layer with ``m`` hidden units.

    **Map and log-det.** ``Q`` is ``d x m`` with orthonormal columns, ``R`` and ``R~`` are
    ``m x m`` upper triangular, ``b`` in ``R^m``. By Sylvester's determinant identity
    ``det(I_d + Q R D R~ Q^T) = det(I_m + D R~ R)`` with ``D = diag h'(R~ Q^T z + b)``, and
    ``D R~ R`` is triangular, so ``log|det| = sum_i log(1 + h'_i R~_ii R_ii)``.

    **Constraint.** ``R_ii = tanh(.)`` and ``R~_ii = (1 - 1e-4) tanh(.)`` (van den Berg et
    al.), so ``R_ii R~_ii > -1`` and, for ``h`` with ``0 <= h' <= 1`` (tanh, softplus, ReLU,
    leaky ReLU with slope <= 1), every factor ``1 + h'_i R~_ii R_ii >= 1e-4``: invertible.
    Off-diagonal entries are free. ``R`` starts at zero (the identity map).

    **Parameterisations of Q** (``kind``):

    - ``"orthogonal"``: ``Q`` = the first ``m`` columns of ``exp(A - A^T)`` for a free
      ``d x d`` matrix ``A`` (the matrix exponential of a skew-symmetric matrix is exactly
      orthogonal, smooth in ``A``, with no iterative re-orthogonalisation to converge);
      ``m <= d``. O(d^3) per call for the exponential.
    - ``"householder"``: ``Q`` = the first ``m`` columns of a product of ``reflections``
      Householder matrices, O(k d m) per call.
    - ``"triangular"``: ``Q = I`` (or the reversal permutation with ``flip=True``), ``m = d``;
      stacks alternate ``flip`` so both triangular orders occur.

    **Inverse.** Write ``v = Q^T z``; the part of ``z`` orthogonal to ``Q``'s columns is
    unchanged and ``Q^T x = v + R h(R~ v + b)``. This ``m``-dimensional map is triangular:
    its last coordinate depends on ``v_m`` alone, and given ``v_{i+1..m}`` coordinate ``i``
    is the strictly increasing scalar map ``v_i -> v_i + R_ii h(R~_ii v_i + c_i)`` (slope
    ``1 + R_ii R~_ii h' >= 1e-4``). Back substitution solves ``m`` such equations with the
    bracketed Newton solver (:func:`flowforge.solvers.solve_increasing`, ``tol``/``max_iter``),
    raising :class:`~flowforge.InversionError` if one does not converge. Cost O(d m + m^2)
    per sample plus ``m`` sequential solves of ~5-15 iterations each.

    **Expressiveness.** Seed 000 (Kong & Chaudhuri) proves a *topology matching*
    condition: if stacked Sylvester layers with ``M`` hidden units in total and smooth
    ``h`` map ``q`` exactly to ``p``, then ``dim{grad_z L(z)} <= M`` for
    ``L(z) = log p(f(z)) - log q(z)``, so ``M`` must be at least that dimension ``r``; with
    ``M < d`` even Gaussians can be out of reach. For ReLU ``h`` the map is piecewise
    linear and ``C^T grad log p(f(z)) = grad log q(z)`` must hold pointwise, which rules out
    mapping between product distributions or Gaussian mixtures except in special cases.
    ``flowforge experiment topology`` shows it. Seed 001 (Koehler et al.) adds a depth lower
    bound for layerwise-invertible families with few parameters per layer and bounded
    Lipschitz constant.

    Args:
        features: dimension ``d``.
        hidden: the number ``m`` of hidden units (default ``d``; ``m = d`` for triangular).
        kind: ``"orthogonal"``, ``"householder"`` or ``"triangular"``.
        activation: ``"tanh"`` (default), ``"softplus"``, ``"relu"`` or ``"leaky_relu"``.
        negative_slope: slope of ``leaky_relu`` for negative arguments, in (0, 1].
        reflections: number of Householder reflections (``kind="householder"``; default ``d``).
        flip: use the reversal permutation as ``Q`` (``kind="triangular"``).
        tol: relative tolerance of each scalar solve of the inverse.
        max_iter: iteration cap of each scalar solve.

    Cost: forward O(d m + m^2) per sample (plus the per-call cost of ``Q`` above); inverse
    the same plus ``m`` sequential scalar root solves.

    References:
        van den Berg, Hasenclever, Tomczak, Welling. "Sylvester Normalizing Flows for
        Variational Inference". UAI 2018.
        Kong & Chaudhuri. "The Expressive Power of a Class of Normalizing Flow Models". AISTATS 2020.

    Examples:
        >>> import torch
        >>> t = Sylvester(4, hidden=2, kind="householder", reflections=3).double()
        >>> with torch.no_grad():
        ...     _ = t.r_diag.fill_(-3.0)  # R_ii R~_ii close to -1: strongly contracting, still invertible
        >>> z = torch.randn(6, 4, dtype=torch.float64)
        >>> x, ladj = t(z)
        >>> z_back, ladj_back = t.inverse(x)
        >>> bool((z_back - z).abs().max() < 1e-9), bool(torch.allclose(ladj, -ladj_back))
        (True, True)
    """

    iterative = True
    inverse_method = "back substitution: m bracketed Newton root solves (tol, max_iter)"

    def __init__(
        self,
        features: int,
        *,
        hidden: int | None = None,
        kind: str = "orthogonal",
        activation: str = "tanh",
        negative_slope: float = 0.2,
        reflections: int | None = None,
        flip: bool = False,
        tol: float = 1e-10,
        max_iter: int = 100,
    ) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"features must be a positive integer; got {features!r}")
        d = int(features)
        m = d if hidden is None else int(hidden)
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}; got {kind!r}")
        if not 1 <= m <= d:
            raise ValueError(
                f"hidden must be between 1 and features={d} (Q has orthonormal columns); got {m}"
            )
        if kind == "triangular" and m != d:
            raise ValueError(f"kind='triangular' needs hidden == features ({d}); got hidden={m}")
        self.act = Activation(activation, float(negative_slope) if activation == "leaky_relu" else 0.0)
        if self.act.max_derivative > 1:
            raise ValueError(f"Sylvester needs h' <= 1; leaky_relu slope must be <= 1, got {negative_slope}")
        self.features, self.hidden, self.kind = d, m, kind
        self.event_shape = (d,)
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.register_buffer("triu", torch.triu(torch.ones(m, m), 1), persistent=False)
        self.r_upper = nn.Parameter(torch.zeros(m, m))
        self.r_diag = nn.Parameter(torch.zeros(m))
        self.rt_upper = nn.Parameter(torch.randn(m, m) / math.sqrt(m))
        self.rt_diag = nn.Parameter(torch.ones(m))
        self.bias = nn.Parameter(torch.zeros(m))
        if kind == "orthogonal":
            self.skew = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        elif kind == "householder":
            k = d if reflections is None else int(reflections)
            if k < 1:
                raise ValueError(f"reflections must be >= 1; got {reflections}")
            self.vectors = nn.Parameter(torch.randn(k, d))
        else:
            order = torch.arange(d - 1, -1, -1) if flip else torch.arange(d)
            self.register_buffer("order", order, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, hidden={self.hidden}, kind={self.kind!r}, activation={self.act.name!r}"
        )

    # -- parameters ------------------------------------------------------------------------
    def _q(self, like: Tensor) -> Tensor | None:
        """``Q`` (``d x m``), or ``None`` for the triangular kind (a permutation, applied by indexing)."""
        m = self.hidden
        if self.kind == "orthogonal":
            a = self.skew.to(like.dtype)
            return torch.linalg.matrix_exp(a - a.T)[:, :m]
        if self.kind == "householder":
            q = torch.eye(self.features, m, dtype=like.dtype, device=like.device)
            for v in self.vectors.to(like.dtype).flip(0):
                v = v / torch.linalg.vector_norm(v)
                q = q - 2 * torch.outer(v, v @ q)
            return q
        return None

    def _r(self, like: Tensor) -> tuple[Tensor, Tensor]:
        r = self.r_upper.to(like.dtype) * self.triu + torch.diag(torch.tanh(self.r_diag.to(like.dtype)))
        rt_diag = (1 - MARGIN) * torch.tanh(self.rt_diag.to(like.dtype))
        rt = self.rt_upper.to(like.dtype) * self.triu + torch.diag(rt_diag)
        return r, rt

    def _project(self, x: Tensor, q: Tensor | None) -> Tensor:
        return x[..., self.order] if q is None else x @ q

    def _lift(self, v: Tensor, q: Tensor | None) -> Tensor:
        return v[..., torch.argsort(self.order)] if q is None else v @ q.T

    # -- directions ------------------------------------------------------------------------
    def _forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        q = self._q(z)
        r, rt = self._r(z)
        pre = self._project(z, q) @ rt.T + self.bias.to(z.dtype)
        x = z + self._lift(self.act(pre) @ r.T, q)
        diag = torch.diagonal(r) * torch.diagonal(rt)
        return x, torch.log1p(self.act.derivative(pre) * diag).sum(-1)

    def _inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        q = self._q(x)
        r, rt = self._r(x)
        b = self.bias.to(x.dtype)
        target = self._project(x, q)
        outside = x - self._lift(target, q)  # the part of x that the layer leaves alone
        vs: list[Tensor] = []  # the solved v_{i+1}, ..., v_m, in order
        hs: list[Tensor] = []  # h(pre) at those coordinates
        ladj = x.new_zeros(x.shape[:-1])
        for i in range(self.hidden - 1, -1, -1):
            if vs:
                c = b[i] + torch.stack(vs, dim=-1) @ rt[i, i + 1 :]
                t = target[..., i] - torch.stack(hs, dim=-1) @ r[i, i + 1 :]
            else:
                c, t = b[i], target[..., i]
            rho, kappa = r[i, i], rt[i, i]

            def f(a: Tensor, rho=rho, kappa=kappa, c=c) -> tuple[Tensor, Tensor]:
                p = kappa * a + c
                return a + rho * self.act(p), 1 + rho * kappa * self.act.derivative(p)

            half = (rho.detach().abs() + 1).expand_as(t)
            v = solve_increasing(f, t, lower=t - half, upper=t + half, tol=self.tol, max_iter=self.max_iter)
            pre = kappa * v + c
            vs.insert(0, v)
            hs.insert(0, self.act(pre))
            ladj = ladj - torch.log1p(rho * kappa * self.act.derivative(pre))
        z = outside + self._lift(torch.stack(vs, dim=-1), q)
        return z, ladj
