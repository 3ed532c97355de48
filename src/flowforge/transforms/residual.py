"""Invertible residual blocks (i-ResNet, Behrmann et al. 2019; residual flows, Chen et al. 2019).

Seed 004 names residual flows as to do; this is that layer. ``x = z + g(z)`` is
invertible when ``Lip(g) < 1`` (Banach), which spectral normalisation of ``g``'s weights
guarantees; the inverse is a fixed-point iteration, the log-determinant exact (small
``d``) or estimated without bias (large ``d``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..solvers import fixed_point
from .base import Transform

__all__ = ["InvertibleResidual"]

_LOGDETS = ("exact", "series", "roulette")


def _lipswish(a: Tensor) -> tuple[Tensor, Tensor]:
    # x sigmoid(x) has slope at most 1.0998 (Chen et al.), so dividing by 1.1 makes it 1-Lipschitz.
    s = torch.sigmoid(a)
    return a * s / 1.1, (s + a * s * (1 - s)) / 1.1


def _elu(a: Tensor) -> tuple[Tensor, Tensor]:
    return F.elu(a), torch.where(a > 0, torch.ones_like(a), torch.exp(torch.clamp(a, max=0)))


def _tanh(a: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(a)
    return t, 1 - t * t


_ACTIVATIONS = {"lipswish": _lipswish, "elu": _elu, "tanh": _tanh}


class InvertibleResidual(Transform):
    """Residual block ``x = z + g(z)`` with ``Lip(g) <= lipschitz < 1``: an invertible ResNet layer.

    **The block.** ``g`` is an MLP ``d -> hidden... -> d`` with 1-Lipschitz activations
    (LipSwish ``x sigmoid(x) / 1.1``, ELU or tanh). Each of its ``L`` weight matrices is
    rescaled to spectral norm at most ``lipschitz^(1/L)``: ``W <- W min(1, c / sigma_max(W))``
    with the *exact* largest singular value (``torch.linalg.matrix_norm(W, 2)``, not a
    power-iteration estimate, which can undershoot), so ``Lip(g) <= lipschitz`` holds for
    every parameter value. With ``context_features`` the context is concatenated to ``g``'s
    input; the bound then holds in ``z`` for every fixed context.

    **Inverse.** ``z = x - g(z)`` is a contraction in ``z``, solved by
    :func:`flowforge.solvers.fixed_point` from ``z = x`` to ``tol`` (about
    ``log(tol) / log(lipschitz)`` iterations at worst), raising
    :class:`~flowforge.InversionError` beyond ``max_iter``. Gradients of the inverse are
    exact implicit ones (an adjoint fixed point), not backpropagation through iterations.

    **Log-det** ``log det(I + J_g)`` (positive determinant since ``|J_g| < 1``), by ``logdet``:

    - ``"exact"``: the Jacobian ``J_g = W_L D_{L-1} ... D_1 W_1`` assembled per sample and
      ``slogdet``; O(d^3 + d h^2) per sample. Deterministic; the generic checks use it.
    - ``"series"``: ``sum_{k=1}^{n} (-1)^{k+1} tr(J_g^k) / k`` truncated at ``terms`` with
      one Hutchinson (Rademacher) vector per sample, ``tr(A) ~ v^T A v``: ``n`` vector-
      Jacobian products. Biased by at most ``d L^{n+1} / ((n+1)(1-L))``.
    - ``"roulette"``: the unbiased Russian-roulette estimator of Chen et al.: the first
      ``fixed_terms`` terms always, then ``N ~ Geometric(p)`` more per sample, term ``k``
      divided by ``P(N >= k - fixed_terms) = (1-p)^(k - fixed_terms)``. The variance is
      finite when ``lipschitz^2 < 1 - p``; the default ``p = (1 - lipschitz^2) / 2``
      ensures it (about ``1/p`` extra terms on average).

    The estimators are random (they use the global torch generator) and differentiable:
    their gradients are unbiased estimates of the log-det's gradient. In the inverse
    direction they are drawn afresh, so ``inverse ladj = -forward ladj`` only in
    expectation; ``log_prob`` is then an unbiased estimate of the log-density.

    **Expressiveness.** A residual flow gains flexibility only through depth: the
    Jacobian ``I + J_g`` of one block has its singular values in
    ``[1 - lipschitz, 1 + lipschitz]``, so its log-det lies in
    ``[d log(1 - lipschitz), d log(1 + lipschitz)]``. Seed 001
    (Koehler et al.) proves a depth lower bound for exactly such families, layerwise
    invertible with bounded Lipschitz constant and few parameters per layer.

    Args:
        features: dimension ``d``.
        hidden: hidden sizes of ``g``.
        lipschitz: the bound on ``Lip(g)``, in (0, 1).
        activation: ``"lipswish"`` (default, smooth), ``"elu"`` or ``"tanh"``.
        logdet: ``"exact"``, ``"series"`` or ``"roulette"``.
        terms: number of series terms (``logdet="series"``).
        fixed_terms: terms always computed before the roulette (``logdet="roulette"``).
        roulette_p: the geometric distribution's ``p`` (default ``(1 - lipschitz^2) / 2``).
        context_features: size of a context vector fed to ``g``, else ``None``.
        tol: relative tolerance of the fixed-point inverse.
        max_iter: iteration cap of the fixed-point inverse.

    Cost: forward O(d h + h^2) per sample for ``g``; log-det O(d^3 + d h^2) (exact) or
    O(k (d h + h^2)) for ``k`` series terms; inverse O(d h + h^2) per fixed-point iteration;
    one SVD per weight matrix per call.

    References:
        Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen. "Invertible Residual Networks". ICML 2019.
        Chen, Behrmann, Duvenaud, Jacobsen. "Residual Flows for Invertible Generative
        Modeling". NeurIPS 2019.

    Examples:
        >>> import torch
        >>> t = InvertibleResidual(3, hidden=(16,)).double()
        >>> z = torch.randn(5, 3, dtype=torch.float64)
        >>> x, ladj = t(z)
        >>> z_back, ladj_back = t.inverse(x)
        >>> bool((z_back - z).abs().max() < 1e-9), bool(torch.allclose(ladj, -ladj_back))
        (True, True)
    """

    iterative = True
    inverse_method = "fixed-point iteration z <- x - g(z) (a contraction), tol/max_iter"

    def __init__(
        self,
        features: int,
        *,
        hidden: Sequence[int] = (64, 64),
        lipschitz: float = 0.9,
        activation: str = "lipswish",
        logdet: str = "exact",
        terms: int = 10,
        fixed_terms: int = 2,
        roulette_p: float | None = None,
        context_features: int | None = None,
        tol: float = 1e-10,
        max_iter: int = 1000,
    ) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"features must be a positive integer; got {features!r}")
        if not 0 < lipschitz < 1:
            raise ValueError(f"lipschitz must be in (0, 1) for the block to be invertible; got {lipschitz}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}")
        if logdet not in _LOGDETS:
            raise ValueError(f"logdet must be one of {_LOGDETS}; got {logdet!r}")
        if terms < 1 or fixed_terms < 0:
            raise ValueError(f"need terms >= 1 and fixed_terms >= 0; got {terms} and {fixed_terms}")
        p = (1 - lipschitz**2) / 2 if roulette_p is None else float(roulette_p)
        if not 0 < p < 1:
            raise ValueError(f"roulette_p must be in (0, 1); got {roulette_p}")
        d = int(features)
        self.features = d
        self.event_shape = (d,)
        self.lipschitz, self.logdet = float(lipschitz), logdet
        self.terms, self.fixed_terms, self.roulette_p = int(terms), int(fixed_terms), p
        self.tol, self.max_iter = float(tol), int(max_iter)
        self._act = _ACTIVATIONS[activation]
        c = 0 if context_features is None else int(context_features)
        if context_features is not None:
            if c < 1:
                raise ValueError(f"context_features must be positive; got {context_features}")
            self.context_features = c
        sizes = [d + c, *(int(h) for h in hidden), d]
        if any(s < 1 for s in sizes):
            raise ValueError(f"hidden sizes must be positive; got {tuple(hidden)}")
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        with torch.no_grad():
            # Small last layer: the block starts near the identity but with nonzero gradients.
            self.layers[-1].weight.mul_(0.1)
            self.layers[-1].bias.zero_()
        self._per_layer = self.lipschitz ** (1 / len(self.layers))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lipschitz={self.lipschitz}, logdet={self.logdet!r}"

    # -- the residual function ----------------------------------------------------------------
    def _weights(self, like: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Spectrally normalised ``(W, b)`` per layer, computed once per call."""
        out = []
        for layer in self.layers:
            w = layer.weight.to(like.dtype)
            sigma = torch.linalg.matrix_norm(w, ord=2)
            out.append((w * torch.clamp(self._per_layer / sigma, max=1.0), layer.bias.to(like.dtype)))
        return out

    def _g(self, z: Tensor, context: Tensor | None, weights) -> tuple[Tensor, list[Tensor]]:
        """``g(z)`` and the activation derivatives ``D_i`` (for Jacobian products)."""
        h = z
        if context is not None:
            ctx = context.to(z.dtype).expand(*z.shape[:-1], context.shape[-1])
            h = torch.cat([z, ctx], dim=-1)
        ders = []
        for i, (w, b) in enumerate(weights):
            h = h @ w.T + b
            if i < len(weights) - 1:
                h, der = self._act(h)
                ders.append(der)
        return h, ders

    def _vjp(self, v: Tensor, weights, ders: list[Tensor]) -> Tensor:
        """``v^T J_g`` per sample."""
        u = v
        for i in range(len(weights) - 1, 0, -1):
            u = (u @ weights[i][0]) * ders[i - 1]
        return u @ weights[0][0][:, : self.features]

    def _jacobian(self, weights, ders: list[Tensor]) -> Tensor:
        m = weights[0][0][:, : self.features]
        for (w, _), der in zip(weights[1:], ders, strict=True):
            m = w @ (der.unsqueeze(-1) * m)
        return m

    def _logdet(self, z: Tensor, weights, ders: list[Tensor]) -> Tensor:
        batch = z.shape[:-1]
        if self.logdet == "exact":
            eye = torch.eye(self.features, dtype=z.dtype, device=z.device)
            jac = self._jacobian(weights, ders)
            return torch.linalg.slogdet(eye + jac)[1].expand(batch)
        v = torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1
        if self.logdet == "series":
            n = self.terms
            weight = torch.ones(n, *batch, dtype=z.dtype, device=z.device)
        else:
            geo = torch.distributions.Geometric(probs=torch.tensor(self.roulette_p, dtype=z.dtype))
            extra = geo.sample(batch).to(z.device)  # failures before the first success: 0, 1, ...
            n = self.fixed_terms + int(extra.max()) if extra.numel() else self.fixed_terms
            k = torch.arange(1, n + 1, dtype=z.dtype, device=z.device).view(-1, *[1] * len(batch))
            j = (k - self.fixed_terms).clamp(min=0)
            survive = (1 - self.roulette_p) ** j  # P(N >= j)
            weight = torch.where(j <= extra, 1 / survive, torch.zeros_like(survive))
        total = z.new_zeros(batch)
        w = v
        for k in range(1, n + 1):
            w = self._vjp(w, weights, ders)
            total = total + (-1) ** (k + 1) / k * weight[k - 1] * (w * v).sum(-1)
        return total

    # -- directions ---------------------------------------------------------------------------
    def _forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        weights = self._weights(z)
        g, ders = self._g(z, context, weights)
        return z + g, self._logdet(z, weights, ders)

    def _inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        weights = self._weights(x)
        z = fixed_point(
            lambda z: x - self._g(z, context, weights)[0], x, tol=self.tol, max_iter=self.max_iter
        )
        _, ders = self._g(z, context, weights)
        return z, -self._logdet(z, weights, ders)
