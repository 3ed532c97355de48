"""Elementwise monotone bijections ("transformers") with externally supplied parameters.

A transformer is written once and reused by every layer that needs an elementwise map:
the learnable elementwise layers (fixed parameters), coupling layers (parameters from a
network of the fixed half) and autoregressive layers (parameters from a MADE). It holds
no tensors: ``forward(x, params)`` takes ``params`` of shape ``x.shape + (n_params,)``
(or broadcastable to it) and returns ``(y, ladj)`` with an *elementwise* ``ladj``
(same shape as ``x``); the caller sums over event dimensions.

Zero parameters give the identity map for every transformer here, so a conditioner whose
last layer starts at zero makes a layer start as the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AdditiveTransformer", "AffineTransformer", "Transformer"]


class Transformer:
    """Interface of an elementwise monotone bijection with per-element parameters.

    Attributes:
        n_params: number of parameters per element.
    """

    n_params: int = 0

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(y, elementwise log|dy/dx|)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(x, elementwise log|dx/dy|)``."""
        raise NotImplementedError

    def config(self) -> dict:
        """Keyword arguments that rebuild this transformer (for saved specs)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _expand(params: Tensor, x: Tensor) -> Tensor:
        return params.expand(*x.shape, params.shape[-1])


class AdditiveTransformer(Transformer):
    """``y = x + t`` (NICE). One parameter, ``t``; log-determinant zero.

    Examples:
        >>> import torch
        >>> AdditiveTransformer().forward(torch.zeros(2), torch.ones(2, 1))[0]
        tensor([1., 1.])
    """

    n_params = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift = params[..., 0]
        y = x + shift
        return y, torch.zeros_like(y)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        x = y - params[..., 0]
        return x, torch.zeros_like(x)


class AffineTransformer(Transformer):
    """``y = x * exp(s) + t`` with a softly bounded log-scale (RealNVP, MAF, IAF).

    Parameters per element: ``(t, s_raw)``; ``s = B tanh(s_raw / B)`` when ``scale_bound=B``
    is given (so that a conditioner cannot blow the scale up at initialisation), else
    ``s = s_raw``. Elementwise log-determinant ``s``. A pair ``scale_bound=(L, U)`` bounds the
    two sides apart, ``s = U tanh(s_raw / U)`` for ``s_raw > 0`` and ``L tanh(s_raw / L)``
    below, so ``-L < s < U``: the map stretches by up to ``e^U`` and shrinks by at most
    ``e^L``, and its inverse stretches by at most ``e^L``.

    With ``shift_first=True`` the map is ``y = (x + t) * exp(s)``, so that the normalizing
    direction is ``x = y * exp(-s) - t``: the shift is no longer multiplied by ``exp(-s)``
    when a density is evaluated. The two are the same family of maps; they differ in how the
    conditioner's outputs enter, which changes training (``bench/README.md``).

    Args:
        scale_bound: the soft bound ``B`` on |log-scale|, a pair ``(L, U)`` of bounds below
            and above, or ``None`` for none.
        shift_first: shift before scaling in the generative direction (see above).

    Examples:
        >>> import torch
        >>> tr = AffineTransformer(scale_bound=None)
        >>> tr.forward(torch.ones(1), torch.tensor([[1.0, math.log(2.0)]]))
        (tensor([3.]), tensor([0.6931]))
        >>> AffineTransformer(scale_bound=(1.0, 3.0)).log_scale(torch.tensor([-50.0, 50.0]))
        tensor([-1.,  3.])
    """

    n_params = 2

    def __init__(
        self, *, scale_bound: float | tuple[float, float] | None = 3.0, shift_first: bool = False
    ) -> None:
        self._bounds = _scale_bounds(scale_bound)
        if not isinstance(shift_first, bool):
            raise TypeError(f"shift_first must be True or False; got {shift_first!r}")
        self.scale_bound = scale_bound
        self.shift_first = shift_first

    def config(self) -> dict:
        bound = list(self.scale_bound) if isinstance(self.scale_bound, list | tuple) else self.scale_bound
        return {"scale_bound": bound, "shift_first": self.shift_first}

    def log_scale(self, raw: Tensor) -> Tensor:
        if self._bounds is None:
            return raw
        lower, upper = self._bounds
        if torch.compiler.is_compiling():
            # Inductor fuses these ops and keeps for backward what it chooses; its CPU code vectorizes
            # exp (hence sigmoid) but not tanh (a compiled RealNVP step at 64:64:512: 10.5 -> 7.3 ms).
            # Out of place: autograd traces these ops and keeps the sigmoid's output.
            return _soft_bound(raw, lower, upper, in_place=False)[0]
        if raw.numel() < _FUSED_MIN:
            # Small batches: each op's fixed cost dominates, and autograd's own graph of these few
            # ops beats a custom function's Python backward.
            if lower == upper:
                return upper * torch.tanh(raw / upper)
            bound = _by_sign(raw > 0, upper, lower, raw)
            return bound * torch.tanh(raw / bound)
        if raw.requires_grad and torch.is_grad_enabled():
            return _SoftBound.apply(raw, lower, upper)[0]
        return _soft_bound(raw, lower, upper)[0]

    # Few autograd nodes on purpose: at the sizes of small flows each op's fixed cost dominates.
    # ``unbind`` has one gather-free backward (``select`` makes a zero tensor per parameter), and
    # ``addcmul`` shifts and scales in one op.
    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = params.unbind(-1)
        s = self.log_scale(raw)
        scale = torch.exp(s)
        y = (x + shift) * scale if self.shift_first else torch.addcmul(shift, x, scale)
        return y, s.expand_as(y)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = params.unbind(-1)
        neg = -self.log_scale(raw)
        scale = torch.exp(neg)
        x = torch.addcmul(-shift, y, scale) if self.shift_first else (y - shift) * scale
        return x, neg.expand_as(x)


# From this many elements a bounded log-scale goes through _SoftBound / _soft_bound: one saved
# tensor instead of two, and no tanh (5-7x a sigmoid on CPUs). Below, the custom function's
# Python overhead (about 60 us a call) costs more than it saves: measured for issue 9.
_FUSED_MIN = 1 << 15


def _soft_bound(raw: Tensor, lower: float, upper: float, *, in_place: bool = True) -> tuple[Tensor, Tensor]:
    """``(b tanh(raw / b), tanh(raw / b))`` with ``b = upper`` where ``raw > 0``, else ``lower``.

    ``in_place`` works on the fresh ``raw * (2 / b)`` in place: only where autograd does not
    record these ops (inside :class:`_SoftBound`, or without gradients).
    """
    # tanh(v) = 2 sigmoid(2v) - 1: torch's CPU tanh costs 5-7x its sigmoid (bench/README.md),
    # and an absolute error of one float epsilon is harmless in a log-scale.
    if lower == upper:
        v = raw * (2.0 / upper)
    else:
        # The bound by sign without torch.where (1.2 ms for a (10000, 32) batch on a CPU, as much
        # as a matrix product): of raw / upper and raw / lower, the one to take is the smaller when
        # upper > lower (for either sign of raw), and the larger otherwise; alike for t * b. Unlike
        # a sum of rectified parts, this keeps raw = +-inf finite (s = upper or -lower).
        v = _pick_first(lower, upper)(raw * (2.0 / upper), raw * (2.0 / lower))
    t = v.sigmoid_().mul_(2.0).sub_(1.0) if in_place else 2.0 * torch.sigmoid(v) - 1.0
    if lower == upper:
        return t * upper, t
    return _pick_second(lower, upper)(t * upper, t * lower), t


def _pick_first(lower: float, upper: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Of ``raw * 2 / upper`` and ``raw * 2 / lower``, the one for ``raw``'s sign (see _soft_bound)."""
    return torch.minimum if upper >= lower else torch.maximum


def _pick_second(lower: float, upper: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Of ``t * upper`` and ``t * lower``, the one for ``t``'s sign (see _soft_bound)."""
    return torch.maximum if upper >= lower else torch.minimum


def _by_sign(positive: Tensor, a: float, b: float, like: Tensor) -> Tensor:
    """``a`` where ``positive`` else ``b``, in ``like``'s dtype (scalars would round to float32)."""
    if like.dtype == torch.float32:
        return torch.where(positive, a, b)
    return torch.where(positive, like.new_tensor(a), like.new_tensor(b))


class _SoftBound(torch.autograd.Function):
    """:func:`_soft_bound` keeping one tensor for backward, ``t = tanh(raw / b)``.

    ``ds/draw = 1 - t^2`` whatever ``b``, where autograd's own graph of the same ops keeps the
    per-element bound as well: one tensor of the batch's size more per layer (what put RealNVP's
    peak memory above nflows' at 784:1024:1024). ``t`` is an output, so the backward is
    differentiable again; ``b`` is recovered from the sign of ``t`` (that of ``raw``).
    """

    @staticmethod
    def forward(raw: Tensor, lower: float, upper: float) -> tuple[Tensor, Tensor]:
        return _soft_bound(raw, lower, upper)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        ctx.set_materialize_grads(False)
        ctx.bounds = inputs[1:]
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx: Any, grad_s: Tensor | None, grad_t: Tensor | None) -> tuple[Tensor | None, None, None]:
        (t,) = ctx.saved_tensors
        slope = 1 - t * t  # dt/d(raw / b)
        grad = None if grad_s is None else grad_s * slope
        if grad_t is not None:  # only in higher derivatives: the caller uses s alone
            lower, upper = ctx.bounds
            by_t = grad_t * slope / _by_sign(t > 0, upper, lower, t)
            grad = by_t if grad is None else grad + by_t
        return grad, None, None


def _scale_bounds(bound: object) -> tuple[float, float] | None:
    """``(L, U)`` from a ``scale_bound`` option: ``None``, a positive number or a pair of them."""
    if bound is None:
        return None
    pair = bound if isinstance(bound, list | tuple) else (bound, bound)
    ok = len(pair) == 2 and all(isinstance(b, int | float) and not isinstance(b, bool) for b in pair)
    if not ok or not all(0 < b < math.inf for b in pair):
        raise ValueError(
            f"scale_bound must be a positive number, a pair (lower, upper) of them, or None; got {bound!r}"
        )
    return float(pair[0]), float(pair[1])


def softplus_inverse(value: float) -> float:
    """The raw value whose softplus is ``value`` (for identity initialisations)."""
    return value + math.log(-math.expm1(-value))


def normalized_bins(raw: Tensor, minimum: float) -> Tensor:
    """Softmax over the last dimension with each share at least ``minimum``."""
    k = raw.shape[-1]
    if minimum * k >= 1:
        raise ValueError(f"minimum bin share {minimum} is too large for {k} bins")
    return minimum + (1 - minimum * k) * F.softmax(raw, dim=-1)


def knots(shares: Tensor, lower: float, upper: float) -> Tensor:
    """Cumulative knot positions on ``[lower, upper]`` from bin shares (exact endpoints)."""
    cum = torch.cumsum(shares, dim=-1)
    cum = F.pad(cum, (1, 0), value=0.0)
    cum = lower + (upper - lower) * cum
    cum[..., 0] = lower
    cum[..., -1] = upper
    return cum


def bin_index(knots_: Tensor, v: Tensor) -> Tensor:
    """Index of the bin of ``v`` among ``K`` bins delimited by ``K + 1`` knots (clamped)."""
    inner = knots_[..., 1:-1]
    return (v.unsqueeze(-1) >= inner).sum(dim=-1, keepdim=True)
