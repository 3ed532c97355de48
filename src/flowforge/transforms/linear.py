"""Linear flows ``y = W x + b`` and their cheap special cases (seed 004, "Linear flows").

A general ``W`` costs O(d^3) for the determinant and the inverse; diagonal, triangular and
LU-factorised (``LULinear``) matrices cost O(d) to O(d^2), as do orthogonal ones
(:mod:`~flowforge.transforms.householder`). Glow's data-initialised per-channel affine map is
in :mod:`~flowforge.transforms.actnorm`. A linear layer maps Gaussians to Gaussians, so
linear layers alone are not universal: they mix dimensions between nonlinear layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._permute import permute_last
from .base import Transform
from .parametric import Elementwise
from .transformers import AffineTransformer

__all__ = [
    "DenseLinear",
    "Diagonal",
    "LULinear",
    "Permutation",
    "TriangularLinear",
]


def _positive(kind: str):
    if kind == "exp":
        return torch.exp, torch.log
    if kind == "softplus":
        return F.softplus, lambda v: v + torch.log(-torch.expm1(-v))
    raise ValueError(f"positive must be 'exp' or 'softplus'; got {kind!r}")


class _VectorLinear(Transform):
    """Shared plumbing: a features-sized event and an optional bias."""

    def __init__(self, features: int, bias: bool) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"features must be a positive integer; got {features!r}")
        self.features = int(features)
        self.event_shape = (self.features,)
        self.bias = nn.Parameter(torch.zeros(self.features)) if bias else None

    def _add_bias(self, y: Tensor) -> Tensor:
        return y if self.bias is None else y + self.bias

    def _sub_bias(self, y: Tensor) -> Tensor:
        return y if self.bias is None else y - self.bias

    def _const(self, value: Tensor, x: Tensor) -> Tensor:
        return value.to(x.dtype).expand(x.shape[:-1])


class Permutation(Transform):
    """Reorders the features: ``y = x[perm]``. Log-det zero. Cost O(d).

    Args:
        features: number of features.
        kind: ``"random"`` (a fixed random permutation drawn once from ``seed``),
            ``"reverse"``, or ``"fixed"`` with ``permutation`` given.
        permutation: the permutation for ``kind="fixed"``.
        seed: seed for ``kind="random"`` (``None`` uses the global generator).

    References:
        Dinh, Krueger, Bengio. "NICE". 2014 (fixed permutations between couplings).

    Examples:
        >>> import torch
        >>> Permutation(3, kind="reverse")(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(
        self,
        features: int,
        *,
        kind: str = "random",
        permutation: Sequence[int] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if kind == "reverse":
            perm = torch.arange(features - 1, -1, -1)
        elif kind == "random":
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            perm = torch.randperm(features, generator=gen)
        elif kind == "fixed":
            if permutation is None:
                raise ValueError("kind='fixed' needs permutation=[...]")
            perm = torch.as_tensor(list(permutation), dtype=torch.long)
            if sorted(perm.tolist()) != list(range(features)):
                raise ValueError(
                    f"permutation must be a permutation of 0..{features - 1}; got {perm.tolist()}"
                )
        else:
            raise ValueError(f"kind must be 'random', 'reverse' or 'fixed'; got {kind!r}")
        self.event_shape = (int(features),)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))
        self._note_reversal()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._note_reversal())

    def _note_reversal(self) -> None:
        # A reversal is a flip: one native op each way with a native backward, 2x faster than a
        # gather with a custom backward at d = 64 (and the default between autoregressive layers).
        d = self.perm.numel()
        self._reversal = bool(torch.equal(self.perm.cpu(), torch.arange(d - 1, -1, -1)))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x.flip(-1) if self._reversal else permute_last(x, self.perm, self.inv_perm)
        return y, x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = y.flip(-1) if self._reversal else permute_last(y, self.inv_perm, self.perm)
        return x, y.new_zeros(y.shape[:-1])


class Diagonal(Elementwise):
    """Elementwise scale and shift ``y = x * exp(s) + t`` with free ``s, t`` per feature.

    Log-det ``sum s``. Cost O(d). The affine transformer with an unbounded log-scale.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): linear flows.

    Examples:
        >>> import torch
        >>> Diagonal(2)(torch.ones(1, 2))
        (tensor([[1., 1.]], grad_fn=<AddcmulBackward0>), tensor([0.], grad_fn=<SumBackward1>))
    """

    def __init__(self, features: int | Sequence[int], *, context_features: int | None = None) -> None:
        super().__init__(AffineTransformer(scale_bound=None), features, context_features=context_features)


class LUWeight(nn.Module):
    """An invertible matrix ``W = P L (U + diag(d))`` with ``d > 0`` (Glow's LU form).

    ``P`` is a fixed permutation, ``L`` unit lower triangular, ``U`` strictly upper
    triangular; ``log|det W| = sum log d``. Starts at ``W = P`` (a permutation).
    """

    def __init__(self, n: int, *, positive: str = "exp", permute: bool = True) -> None:
        super().__init__()
        self.n = n
        self._pos, self._pos_inv = _positive(positive)
        self.positive = positive
        self.register_buffer("perm", torch.randperm(n) if permute else torch.arange(n))
        self.lower = nn.Parameter(torch.zeros(n, n))
        self.upper = nn.Parameter(torch.zeros(n, n))
        self.raw_diag = nn.Parameter(self._pos_inv(torch.ones(n)))
        self.register_buffer("l_mask", torch.tril(torch.ones(n, n), -1))

    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        eye = torch.eye(self.n, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.l_mask + eye
        diag = self._pos(self.raw_diag)
        upper = self.upper * self.l_mask.T + torch.diag(diag)
        return lower, upper, diag

    def matrix(self) -> Tensor:
        lower, upper, _ = self.factors()
        return (lower @ upper)[self.perm.argsort()]

    def logabsdet(self) -> Tensor:
        return torch.log(self._pos(self.raw_diag)).sum()

    def solve(self, y: Tensor) -> Tensor:
        """``W^{-1} y`` for ``y`` of shape ``(n, m)`` by two triangular solves."""
        lower, upper, _ = self.factors()
        v = y[self.perm]
        v = torch.linalg.solve_triangular(lower.to(y.dtype), v, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper.to(y.dtype), v, upper=True)


class LULinear(_VectorLinear):
    """``y = W x + b`` with ``W = P L (U + diag(d))``, ``d > 0`` via exp or softplus.

    Log-det ``sum log d`` (O(d)); the inverse by two triangular solves (O(d^2) per
    sample); the forward O(d^2). Starts as a random permutation.

    References:
        Kingma & Dhariwal 2018 (Glow); Prince, "Understanding Deep Learning", ch. 16.

    Cost: O(d^2) per sample in both directions, O(d) log-det.

    Examples:
        >>> import torch
        >>> t = LULinear(4); x = torch.randn(3, 4)
        >>> bool(torch.allclose(t.inverse(t(x)[0])[0], x, atol=1e-5))
        True
    """

    def __init__(self, features: int, *, positive: str = "exp", bias: bool = True, permute: bool = True):
        super().__init__(features, bias)
        self.weight = LUWeight(self.features, positive=positive, permute=permute)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x @ self.weight.matrix().to(x.dtype).T
        return self._add_bias(y), self._const(self.weight.logabsdet(), x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        v = self._sub_bias(y)
        flat = v.reshape(-1, self.features).T
        x = self.weight.solve(flat).T.reshape(v.shape)
        return x, -self._const(self.weight.logabsdet(), y)


class TriangularLinear(_VectorLinear):
    """``y = W x + b`` with ``W`` lower (or upper) triangular and a positive diagonal.

    Log-det ``sum log diag(W)`` in O(d); inverse by a triangular solve in O(d^2).

    Cost: O(d^2) forward and inverse (triangular solve), O(d) log-det.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): linear flows.

    Examples:
        >>> import torch
        >>> TriangularLinear(3)(torch.randn(2, 3))[1].shape
        torch.Size([2])
    """

    def __init__(self, features: int, *, lower: bool = True, bias: bool = True) -> None:
        super().__init__(features, bias)
        self.is_lower = bool(lower)
        self.off = nn.Parameter(torch.zeros(self.features, self.features))
        self.log_diag = nn.Parameter(torch.zeros(self.features))
        ones = torch.ones(self.features, self.features)
        self.register_buffer("mask", torch.tril(ones, -1) if lower else torch.triu(ones, 1))

    def matrix(self) -> Tensor:
        return self.off * self.mask + torch.diag(torch.exp(self.log_diag))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x @ self.matrix().to(x.dtype).T
        return self._add_bias(y), self._const(self.log_diag.sum(), x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        v = self._sub_bias(y)
        flat = v.reshape(-1, self.features).T
        w = self.matrix().to(y.dtype)
        x = torch.linalg.solve_triangular(w, flat, upper=not self.is_lower).T.reshape(v.shape)
        return x, -self._const(self.log_diag.sum(), y)


class DenseLinear(_VectorLinear):
    """``y = W x + b`` with a full matrix ``W``: the general linear flow.

    Log-det by ``slogdet`` and inverse by ``solve``: O(d^3) each, the cost seed 004 warns
    about. Starts at ``W = I``; nothing keeps ``W`` away from singular matrices, so prefer
    ``LULinear`` unless the full parametrisation is the point (as in seed 001's theory).

    Cost: O(d^3) for the log-det and the inverse, O(d^2) per sample forward.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): linear flows.

    Examples:
        >>> import torch
        >>> DenseLinear(3)(torch.randn(2, 3))[1]
        tensor([0., 0.], grad_fn=<ExpandBackward0>)
    """

    def __init__(self, features: int, *, bias: bool = True) -> None:
        super().__init__(features, bias)
        self.weight = nn.Parameter(torch.eye(self.features))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        w = self.weight.to(x.dtype)
        return self._add_bias(x @ w.T), self._const(torch.linalg.slogdet(w)[1], x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        w = self.weight.to(y.dtype)
        v = self._sub_bias(y)
        x = torch.linalg.solve(w, v.reshape(-1, self.features).T).T.reshape(v.shape)
        return x, -self._const(torch.linalg.slogdet(w)[1], y)
