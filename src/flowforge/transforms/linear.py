"""Linear flows ``y = W x + b`` and their cheap special cases (seed 004, "Linear flows").

A general ``W`` costs O(d^3) for the determinant and the inverse; diagonal, orthogonal
(``Householder``), triangular and LU-factorised (``LULinear``) matrices cost O(d) to
O(d^2). A linear layer maps Gaussians to Gaussians, so linear layers alone are not
universal: they mix dimensions between nonlinear layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ShapeError
from ._permute import permute_last
from .base import Transform
from .parametric import Elementwise
from .transformers import AffineTransformer

__all__ = [
    "ActNorm",
    "DenseLinear",
    "Diagonal",
    "Householder",
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

    Example:
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

    Example:
        >>> import torch
        >>> Diagonal(2)(torch.ones(1, 2))
        (tensor([[1., 1.]], grad_fn=<AddcmulBackward0>), tensor([0.], grad_fn=<SumBackward1>))
    """

    def __init__(self, features: int | Sequence[int], *, context_features: int | None = None) -> None:
        super().__init__(AffineTransformer(scale_bound=None), features, context_features=context_features)


class ActNorm(Transform):
    """Per-channel scale and shift initialised from the first data batch (Glow).

    ``y = x * exp(s) + b`` per channel; log-det ``(prod of spatial sizes) * sum s``. On
    the first call in the normalizing direction (data -> base, i.e. during maximum
    likelihood) ``b`` and ``s`` are set so that the outputs have zero mean and unit
    variance per channel; a first call in the generative direction keeps the identity.

    Args:
        features: number of channels ``C``.
        event_dim: 1 for vectors ``(..., C)``, 3 for images ``(..., C, H, W)``.

    References:
        Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.

    Cost: O(n) in both directions.

    Example:
        >>> import torch
        >>> t = ActNorm(2); z, _ = t.inverse(5 + 3 * torch.randn(1000, 2))
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True
    """

    def __init__(self, features: int, *, event_dim: int = 1) -> None:
        super().__init__()
        if event_dim not in (1, 2, 3):
            raise ValueError(f"event_dim must be 1, 2 or 3; got {event_dim}")
        self.features = int(features)
        self.event_dim = event_dim
        self.log_scale = nn.Parameter(torch.zeros(self.features))
        self.shift = nn.Parameter(torch.zeros(self.features))
        self.register_buffer("initialized", torch.tensor(False))
        # A Python mirror of the buffer, refreshed on loading: reading the buffer every call is a
        # host sync, and under torch.compile a graph break at every ActNorm of the model.
        self._ready = False
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_ready())

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.to(x.dtype).view(self.features, *[1] * (self.event_dim - 1))

    def _check(self, x: Tensor, direction: str) -> None:
        c = x.shape[x.dim() - self.event_dim]
        if c != self.features:
            raise ShapeError(
                f"ActNorm.{direction} expects {self.features} channels at dim -{self.event_dim}; "
                f"got shape {tuple(x.shape)}"
            )

    def _ladj(self, x: Tensor) -> Tensor:
        spatial = int(torch.Size(x.shape[x.dim() - self.event_dim + 1 :]).numel())
        return (spatial * self.log_scale.sum()).to(x.dtype).expand(x.shape[: x.dim() - self.event_dim])

    def _refresh_ready(self) -> None:
        self._ready = bool(self.initialized)

    @torch.no_grad()
    def _initialize(self, y: Tensor) -> None:
        flat = y.movedim(y.dim() - self.event_dim, -1).reshape(-1, self.features)
        if flat.shape[0] > 1:
            self.shift.copy_(flat.mean(0))
            self.log_scale.copy_(torch.log(flat.std(0).clamp_min(1e-6)))
        self.initialized.fill_(True)
        self._ready = True

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(x, "forward")
        if not self._ready:
            self.initialized.fill_(True)
            self._ready = True
        y = x * torch.exp(self._view(self.log_scale, x)) + self._view(self.shift, x)
        return y, self._ladj(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._check(y, "inverse")
        if not self._ready and self.training:
            self._initialize(y)
        x = (y - self._view(self.shift, y)) * torch.exp(-self._view(self.log_scale, y))
        return x, -self._ladj(y)


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

    Example:
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

    Example:
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


class Householder(Transform):
    """An orthogonal map, the product of ``k`` Householder reflections ``H = I - 2 v v^T / |v|^2``.

    ``y = H_k ... H_1 x``; log-det zero; the inverse applies the reflections in reverse
    order. Cost O(k d) per sample in both directions. ``k = d`` reflections can express
    any orthogonal matrix (up to a sign of the determinant when ``k = d - 1``).

    References:
        Tomczak & Welling. "Improving Variational Auto-Encoders using Householder Flow". 2016.

    Example:
        >>> import torch
        >>> t = Householder(5, reflections=3); x = torch.randn(2, 5)
        >>> bool(torch.allclose(t(x)[0].norm(dim=-1), x.norm(dim=-1), atol=1e-5))
        True
    """

    def __init__(self, features: int, *, reflections: int = 2) -> None:
        super().__init__()
        if reflections < 1:
            raise ValueError(f"reflections must be >= 1; got {reflections}")
        self.event_shape = (int(features),)
        self.vectors = nn.Parameter(torch.randn(int(reflections), int(features)))

    def _reflect(self, x: Tensor, order) -> Tensor:
        v = self.vectors.to(x.dtype)
        for i in order:
            u = v[i] / v[i].norm()
            x = x - 2 * (x @ u).unsqueeze(-1) * u
        return x

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._reflect(x, range(len(self.vectors))), x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._reflect(y, reversed(range(len(self.vectors)))), y.new_zeros(y.shape[:-1])


class DenseLinear(_VectorLinear):
    """``y = W x + b`` with a full matrix ``W``: the general linear flow.

    Log-det by ``slogdet`` and inverse by ``solve``: O(d^3) each, the cost seed 004 warns
    about. Starts at ``W = I``; nothing keeps ``W`` away from singular matrices, so prefer
    ``LULinear`` unless the full parametrisation is the point (as in seed 001's theory).

    Cost: O(d^3) for the log-det and the inverse, O(d^2) per sample forward.

    References:
        Prince. "Understanding Deep Learning", ch. 16 (2023): linear flows.

    Example:
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
