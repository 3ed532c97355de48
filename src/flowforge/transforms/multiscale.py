"""Multi-scale flows (seed 004): squeezing, factoring out half of the variables, scales in a stack.

In the normalizing direction a multi-scale flow squeezes the image to half the resolution
(``Squeeze``), runs some steps, then factors half the channels out: they are *done* and are
evaluated under the base, while the other half goes on to the next, coarser scale.

A factor-out changes the dimension of what flows on, which one ``Transform`` under one base
cannot express as a shape change. flowforge keeps every layer a bijection of the same total
size instead: :class:`Split` runs an inner transform (the coarser scales) on the kept half
and passes the factored half through, so the base of the whole flow evaluates the factored
half just like the rest. The factored half may also get a *learned conditional prior*
(Glow's split prior): a Gaussian whose mean and log-scale are networks of the kept half,
written as the affine bijection ``z2 = mu(h) + exp(s(h)) * eps`` (``eps`` under the base),
i.e. an affine coupling with a channel mask. :class:`MultiScale` is one scale: squeeze, the
steps of this scale, the factor-out with the coarser scales inside, and the inverse squeeze
so that its input and output are both the ``(C, H, W)`` image.

References:
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.
    Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.
    Prince. "Understanding Deep Learning", ch. 16 (2023): multi-scale flows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ShapeError
from .base import Compose, Transform, _fmt
from .coupling import AffineCoupling
from .parametric import _event_shape

__all__ = ["MultiScale", "Split", "Squeeze"]


def _image(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"{what} needs an image shape (C, H, W) of positive sizes; got {shape}")
    return shape  # type: ignore[return-value]


class Squeeze(Transform):
    """Space-to-depth: ``(..., C, H, W) -> (..., C f^2, H/f, W/f)`` in the forward direction.

    Each ``f x f`` block of pixels becomes ``f^2`` channels:
    ``y[c f^2 + i f + j, h, w] = x[c, h f + i, w f + j]``. A permutation of the entries, so
    log-det 0 both ways; the inverse is depth-to-space. ``event_shape`` is the forward
    input's ``(C, H, W)``. In a flow whose data are ``(C, H, W)`` and whose layers work at
    half resolution, the last layer is ``Squeeze(shape).inv`` (data side), or use
    :class:`MultiScale`, which squeezes and unsqueezes around its steps. Cost O(n).

    References:
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.

    Examples:
        >>> import torch
        >>> t = Squeeze((1, 2, 2))
        >>> t(torch.arange(4.0).reshape(1, 2, 2))[0].flatten()
        tensor([0., 1., 2., 3.])
        >>> t(torch.randn(5, 1, 2, 2))[0].shape
        torch.Size([5, 4, 1, 1])
    """

    event_dim = 3

    def __init__(self, shape: Sequence[int], *, factor: int = 2) -> None:
        super().__init__()
        c, h, w = _image(shape, "Squeeze")
        if factor < 1 or h % factor or w % factor:
            raise ValueError(f"Squeeze with factor {factor} needs H and W divisible by it; got shape {shape}")
        self.factor = int(factor)
        self.event_shape = (c, h, w)
        self.squeezed_shape = (c * factor * factor, h // factor, w // factor)

    def _validate(self, x: Tensor, context: Tensor | None, direction: str) -> None:
        expected = self.event_shape if direction == "forward" else self.squeezed_shape
        if not isinstance(x, Tensor):
            raise TypeError(f"Squeeze.{direction} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 3 or tuple(x.shape[-3:]) != expected:
            raise ShapeError(
                f"Squeeze.{direction} expects inputs of shape (..., {_fmt(expected)[1:]}; got {_fmt(x.shape)}"
            )

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f, (c, h, w), batch = self.factor, self.event_shape, x.shape[:-3]
        n = len(batch)
        # (..., c, h/f, i, w/f, j) -> (..., c, i, j, h/f, w/f)
        y = x.reshape(*batch, c, h // f, f, w // f, f).permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
        return y.reshape(*batch, *self.squeezed_shape), x.new_zeros(batch)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        f, (c, h, w), batch = self.factor, self.event_shape, y.shape[:-3]
        n = len(batch)
        x = y.reshape(*batch, c, f, f, h // f, w // f).permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
        return x.reshape(*batch, c, h, w), y.new_zeros(batch)


class Split(Transform):
    """Factor-out: an inner transform on the kept half, the factored half to the base.

    The event (``(d,)`` or ``(C, H, W)``) splits along its first dimension into the kept
    ``h`` (the first ``ceil(C/2)`` channels) and the factored ``z2`` (the rest). Forward:
    ``h = inner(h_0)``, and ``z2 = eps`` (``prior="base"``) or
    ``z2 = mu(h) + exp(s(h)) * eps`` (``prior="learned"``: a conditional Gaussian prior,
    an affine coupling whose conditioner starts at zero, so the prior starts as the base).
    Log-det: the inner one plus ``sum s(h)``. The inverse applies the pieces' inverses.
    Cost: the inner transform plus one conditioner pass for a learned prior.

    Args:
        inner: the transform of the kept half (e.g. the coarser scales), or ``None``.
        shape: the event shape.
        prior: ``"base"`` or ``"learned"``.
        context_features: context size (reaches the inner transform and the learned prior).
        hidden: hidden sizes of the learned prior's conditioner (MLP or conv ResNet).
        scale_bound: the soft bound on the learned prior's log-scale.

    References:
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.
        Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.

    Examples:
        >>> import torch
        >>> from flowforge.transforms import LULinear
        >>> t = Split(LULinear(2), 4, prior="learned")
        >>> x = torch.randn(3, 4); bool(torch.allclose(t.inverse(t(x)[0])[0], x, atol=1e-6))
        True
    """

    def __init__(
        self,
        inner: Transform | None,
        shape: int | Sequence[int],
        *,
        prior: str = "base",
        context_features: int | None = None,
        hidden: Sequence[int] = (64, 64),
        scale_bound: float | tuple[float, float] | None = 3.0,
    ) -> None:
        super().__init__()
        self.event_shape = _event_shape(shape)
        self.event_dim = len(self.event_shape)
        if self.event_dim not in (1, 3):
            raise ValueError(f"Split works on vectors (d,) or images (C, H, W); got shape {self.event_shape}")
        if self.event_shape[0] < 2:
            raise ValueError(f"Split needs at least 2 channels (features) to split; got {self.event_shape}")
        if prior not in ("base", "learned"):
            raise ValueError(f"prior must be 'base' or 'learned'; got {prior!r}")
        self.keep = (self.event_shape[0] + 1) // 2
        kept_shape = (self.keep, *self.event_shape[1:])
        if inner is not None:
            if not isinstance(inner, Transform):
                raise TypeError(f"inner must be a Transform or None; got {type(inner).__name__}")
            if inner.event_shape is not None and tuple(inner.event_shape) != kept_shape:
                raise ShapeError(
                    f"Split keeps a part of shape {_fmt(kept_shape)}; the inner transform expects "
                    f"{_fmt(inner.event_shape)}"
                )
            ctx = {c for c in (context_features, inner.context_features) if c is not None}
            if len(ctx) > 1:
                raise ValueError(
                    f"context_features={context_features} differs from the inner transform's "
                    f"{inner.context_features}"
                )
        self.inner = inner
        self.prior = prior
        self.context_features = (
            context_features
            if context_features is not None
            else (inner.context_features if inner is not None else None)
        )
        self.coupling = None
        if prior == "learned":
            mask = "channel" if self.event_dim == 3 else "half"
            # shift_first=False: z2 = eps * exp(s(h)) + t(h), the conditional Gaussian N(t, e^2s)
            # of Glow's split prior in its own parameters (and what files of every version hold).
            self.coupling = AffineCoupling(
                self.event_shape,
                mask=mask,
                hidden=hidden,
                scale_bound=scale_bound,
                context_features=context_features,
                shift_first=False,
            )

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dim = x.dim() - self.event_dim
        return x.narrow(dim, 0, self.keep), x.narrow(dim, self.keep, x.shape[dim] - self.keep)

    def _join(self, h: Tensor, z2: Tensor) -> Tensor:
        # A context with a larger batch than the input broadcasts the kept half only.
        n = self.event_dim
        batch = torch.broadcast_shapes(h.shape[: h.dim() - n], z2.shape[: z2.dim() - n])
        parts = [h.expand(*batch, *h.shape[-n:]), z2.expand(*batch, *z2.shape[-n:])]
        return torch.cat(parts, dim=len(batch))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        ladj = x.new_zeros(x.shape[: x.dim() - self.event_dim])
        if self.inner is not None:
            h, z2 = self._halves(x)
            h, ladj = self.inner(h, context)
            x = self._join(h, z2)
        if self.coupling is not None:
            x, extra = self.coupling(x, context)
            ladj = ladj + extra
        return x, ladj

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        ladj = y.new_zeros(y.shape[: y.dim() - self.event_dim])
        if self.coupling is not None:
            y, ladj = self.coupling.inverse(y, context)
        if self.inner is not None:
            h, z2 = self._halves(y)
            h, extra = self.inner.inverse(h, context)
            ladj = ladj + extra
            y = self._join(h, z2)
        return y, ladj


class MultiScale(Transform):
    """One scale of a multi-scale flow on ``(C, H, W)`` images: squeeze, steps, factor-out, unsqueeze.

    With ``S`` the :class:`Squeeze` to ``(4C, H/2, W/2)`` and ``F`` the :class:`Split` whose
    inner transform is ``inner`` (the coarser scales, on ``(2C, H/2, W/2)``), the forward map
    is ``S^{-1} o steps o F o S``: in the normalizing direction an image is squeezed, goes
    through the inverse steps, half its channels are factored out and the other half goes
    through ``inner``; the result is put back to ``(C, H, W)`` (the latent's layout is
    immaterial under an i.i.d. base). Without ``inner`` nothing is factored out (the last,
    coarsest scale). Log-det: the steps' plus the factor-out's. Cost: that of the steps and
    of ``inner`` (at a quarter of the pixels each time), plus O(n).

    Args:
        steps: the transform(s) of this scale, on ``(4C, H/2, W/2)``, in generative order.
        shape: the image shape ``(C, H, W)`` (``H`` and ``W`` even).
        inner: the coarser scales on ``(2C, H/2, W/2)``, or ``None``.
        prior: ``"base"`` or ``"learned"``: the factored half's prior (see :class:`Split`).
        context_features: context size (reaches the steps, ``inner`` and a learned prior).
        hidden: channels of the learned prior's ResNet blocks.

    References:
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.
        Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.

    Examples:
        >>> import torch
        >>> from flowforge.transforms import AffineCoupling, Invertible1x1Conv
        >>> coarse = MultiScale(AffineCoupling((8, 1, 1), mask="channel", hidden=(8,)), (2, 2, 2))
        >>> steps = [Invertible1x1Conv(4), AffineCoupling((4, 2, 2), mask="channel", hidden=(8,))]
        >>> t = MultiScale(steps, (1, 4, 4), inner=coarse, prior="learned", hidden=(8,))
        >>> x = torch.randn(3, 1, 4, 4); y, ladj = t(x)
        >>> y.shape, ladj.shape, bool(torch.allclose(t.inverse(y)[0], x, atol=1e-5))
        (torch.Size([3, 1, 4, 4]), torch.Size([3]), True)
    """

    event_dim = 3

    def __init__(
        self,
        steps: Transform | Sequence[Transform],
        shape: Sequence[int],
        *,
        inner: Transform | None = None,
        prior: str = "base",
        context_features: int | None = None,
        hidden: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.squeeze = Squeeze(shape)
        self.event_shape = self.squeeze.event_shape
        squeezed = self.squeeze.squeezed_shape
        members = [steps] if isinstance(steps, Transform) else list(steps)
        for t in members:
            if t.event_shape is not None and tuple(t.event_shape) != squeezed:
                raise ShapeError(
                    f"MultiScale{_fmt(self.event_shape)} runs its steps on {_fmt(squeezed)}; "
                    f"got a {type(t).__name__} for {_fmt(t.event_shape)}"
                )
        if inner is None and prior != "base":
            raise ValueError(
                f"prior={prior!r} applies to a factored-out half: pass inner= (the coarser scales)"
            )
        if inner is not None:
            split = Split(inner, squeezed, prior=prior, context_features=context_features, hidden=hidden)
            members.insert(0, split)
        if not members:
            raise ValueError("MultiScale needs at least one step or an inner transform")
        self.body = Compose(members)
        self.context_features = (
            context_features if context_features is not None else self.body.context_features
        )

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, _ = self.squeeze(x)
        u, ladj = self.body(u, context)
        return self.squeeze.inverse(u)[0], ladj

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, _ = self.squeeze(y)
        u, ladj = self.body.inverse(u, context)
        return self.squeeze.inverse(u)[0], ladj
