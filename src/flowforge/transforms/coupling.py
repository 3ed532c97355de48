"""Coupling layers: transform part of the event with parameters computed from the rest (seed 004).

A boolean mask (see :mod:`flowforge.transforms.masks`) splits the event into a fixed part
``x_F`` (mask ``True``) and a transformed part ``x_T``; a conditioner network ``g`` reads
``x_F`` (and the context) and gives the parameters of an elementwise bijection ``f``
(a :mod:`transformer <flowforge.transforms.transformers>`) applied to ``x_T``:

``y_F = x_F``, ``y_T = f(x_T; g(x_F, c))``, ``log|det dy/dx| = sum_T log f'(x_T; g(x_F, c))``.

The Jacobian is block triangular, the inverse applies ``f^{-1}`` with the same parameters
(``y_F = x_F`` is known), and both directions cost one conditioner pass. Stack layers with
complementary masks (``flip=True``) or with permutations / ``LULinear`` /
``Invertible1x1Conv`` in between so that every entry gets transformed.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from ..nets import MLP, ResNet
from ..nets.precision import conditioner_autocast
from ._permute import permute_last
from .base import Transform
from .masks import as_mask
from .parametric import _event_shape
from .transformers import AdditiveTransformer, AffineTransformer, RQSplineTransformer, Transformer

__all__ = ["AdditiveCoupling", "AffineCoupling", "Coupling", "SplineCoupling"]

# AffineCoupling's defaults before saved-model format version 2: what old files mean (io's
# upgrade) and what the experiments whose reports were made then keep using.
AFFINE_COUPLING_V1 = MappingProxyType({"shift_first": False, "scale_bound": 3.0})


class Coupling(Transform):
    """A coupling layer over any transformer, with any mask and a pluggable conditioner.

    ``y_F = x_F``, ``y_T = f(x_T; g(x_F, c))``; log-det ``sum_T log f'``; inverse
    ``x_T = f^{-1}(y_T; g(y_F, c))``. The conditioner's last layer starts at zero, so a
    new layer is the identity for every built-in transformer.

    Conditioners (``conditioner=``):

    - ``"mlp"`` (the default for non-image events): an MLP of the fixed entries and the context,
      ``(..., |F| + c) -> (..., |T| * P)`` for ``P = transformer.n_params``.
    - ``"resnet"`` (the default for images ``(C, H, W)``): a conv ResNet of the masked image
      ``where(mask, x, 0)`` with the context broadcast as ``c`` extra channels,
      ``(..., C + c, H, W) -> (..., C * P, H, W)``; parameters at fixed pixels are unused.
    - an ``nn.Module`` with the same input and output layout as the default of the event kind
      (such a layer works but cannot be saved with :func:`flowforge.save`).

    Args:
        transformer: the elementwise bijection ``f`` (``flowforge.transforms.transformers``).
        features: the event size (an int) or event shape (a tuple; ``(C, H, W)`` for images).
        mask: a kind of :data:`~flowforge.transforms.masks.MASK_KINDS` (``"alternate"`` by
            default for vectors, ``"checkerboard"`` for images) or explicit 0/1 entries of the
            event shape; 1 (``True``) marks the fixed part.
        flip: use the complementary mask.
        seed: the seed of ``mask="random"``.
        context_features: size of the context vector for a conditional layer.
        hidden: hidden sizes of the MLP, or one channel count per residual block of the ResNet.
        conditioner: ``"mlp"``, ``"resnet"``, a module, or ``None`` for the default.
        activation: the conditioner's activation.
        identity_init: start the conditioner's last layer at zero, so that the layer starts as
            the identity (the default); ``False`` keeps PyTorch's default initialisation, a
            random map at the start (on the 2-D density benchmark it trained RealNVP to a
            better NLL on 17 of 21 runs, on digits to a worse one on 5 of 6; ``bench/README.md``).

    Cost: one conditioner pass plus O(n P) in either direction.

    References:
        Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation". 2014.
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.

    Examples:
        >>> import torch
        >>> from flowforge.transforms.transformers import AffineTransformer
        >>> t = Coupling(AffineTransformer(), 4, mask="half", context_features=2)
        >>> y, ladj = t(torch.randn(3, 4), context=torch.randn(3, 2))
        >>> y.shape, ladj.shape
        (torch.Size([3, 4]), torch.Size([3]))
    """

    def __init__(
        self,
        transformer: Transformer,
        features: int | Sequence[int],
        *,
        mask: str | Sequence | None = None,
        flip: bool = False,
        seed: int | None = None,
        context_features: int | None = None,
        hidden: Sequence[int] = (64, 64),
        conditioner: str | nn.Module | None = None,
        activation: str = "relu",
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(identity_init, bool):
            raise TypeError(f"identity_init must be True or False; got {identity_init!r}")
        self._identity_init = identity_init
        if not isinstance(transformer, Transformer):
            raise TypeError(f"transformer must be a Transformer; got {type(transformer).__name__}")
        self.transformer = transformer
        self.event_shape = _event_shape(features)
        self.event_dim = len(self.event_shape)
        image = self.event_dim == 3
        if mask is None:
            mask = "checkerboard" if image else "alternate"
        self.register_buffer("mask", as_mask(mask, self.event_shape, flip=flip, seed=seed))
        flat = self.mask.reshape(-1)
        order = torch.cat([torch.nonzero(flat).squeeze(-1), torch.nonzero(~flat).squeeze(-1)])
        self.register_buffer("fixed_index", order[: int(flat.sum())])
        self.register_buffer("free_index", order[int(flat.sum()) :])
        self.register_buffer("unorder", torch.argsort(order))
        self._note_layout()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._note_layout())
        if context_features is not None:
            if context_features < 1:
                raise ValueError(f"context_features must be positive; got {context_features}")
            self.context_features = int(context_features)
        ctx = self.context_features or 0
        if conditioner is None:
            conditioner = "resnet" if image else "mlp"
        if isinstance(conditioner, nn.Module):
            self.dense = image
            self.net = conditioner
        elif conditioner == "mlp":
            self.dense = False
            self.net = self._mlp(len(self.fixed_index) + ctx, len(self.free_index), hidden, activation)
        elif conditioner == "resnet":
            if not image:
                raise ValueError(
                    f"conditioner='resnet' needs an image event (C, H, W); got {self.event_shape}"
                )
            self.dense = True
            c = self.event_shape[0]
            out = c * transformer.n_params
            self.net = ResNet(c + ctx, out, hidden=hidden, activation=activation, zero_last=identity_init)
        else:
            raise ValueError(
                f"conditioner must be 'mlp', 'resnet', an nn.Module or None; got {conditioner!r}"
            )

    def _mlp(self, n_in: int, n_free: int, hidden: Sequence[int], activation: str) -> nn.Module:
        """The gather-mode conditioner; subclasses with a structured conditioner override this."""
        out = n_free * self.transformer.n_params
        return MLP(n_in, out, hidden=hidden, activation=activation, zero_last=self._identity_init)

    def extra_repr(self) -> str:
        return f"{self.transformer!r}, fixed={len(self.fixed_index)}, {super().extra_repr()}"

    def _batch(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Broadcast ``x`` and the context to a common batch shape."""
        if context is None:
            return x, None
        batch = torch.broadcast_shapes(self.batch_shape(x), context.shape[:-1])
        x = x.expand(*batch, *self.event_shape)
        return x, context.expand(*batch, context.shape[-1])

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        p = self.transformer.n_params
        if self.dense:
            inp = torch.where(self.mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
            if context is not None:
                h, w = self.event_shape[1:]
                planes = context.to(x.dtype)[..., None, None].expand(*context.shape, h, w)
                inp = torch.cat([inp, planes], dim=-3)
            with conditioner_autocast(x):
                out = self.net(inp).to(x.dtype)
            c, h, w = self.event_shape
            return out.reshape(*out.shape[:-3], c, p, h, w).movedim(-3, -1)
        return self._mlp_params(x.reshape(*self.batch_shape(x), -1)[..., self.fixed_index], context)

    def _mlp_params(self, fixed: Tensor, context: Tensor | None) -> Tensor:
        p = self.transformer.n_params
        inp = fixed if context is None else torch.cat([fixed, context.to(fixed.dtype)], dim=-1)
        with conditioner_autocast(fixed):
            out = self.net(inp).to(fixed.dtype)  # a no-op unless in mixed precision
        return out.reshape(*fixed.shape[:-1], len(self.free_index), p)

    def _note_layout(self) -> None:
        # Where the fixed entries sit decides how to split: slices when they are a prefix or a
        # suffix of the flattened features (every mask in 2-D, "half" masks), else one
        # permutation gather each way (fixed entries first), never index gathers whose gradients
        # are scatter-adds: the slow part of a small coupling's step on a CPU.
        order = torch.cat([self.fixed_index, self.free_index]).cpu()
        self.register_buffer("order", order.to(self.fixed_index.device), persistent=False)
        n, k = order.numel(), self.fixed_index.numel()
        even, odd = torch.arange(0, n, 2), torch.arange(1, n, 2)
        if torch.equal(order, torch.arange(n)):
            self._layout = "prefix"
        elif torch.equal(order, torch.cat([torch.arange(n - k, n), torch.arange(n - k)])):
            self._layout = "suffix"
        elif n % 2 == 0 and torch.equal(order, torch.cat([even, odd])):
            # Alternating masks: strided views split, one stack merges. A gather along the last
            # dimension is slow on CPUs (0.6 ms for a (10000, 64) batch, as much as a matrix product).
            self._layout = "even"
        elif n % 2 == 0 and torch.equal(order, torch.cat([odd, even])):
            self._layout = "odd"
        else:
            self._layout = "gather"

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        x, context = self._batch(x, context)
        f = self.transformer.inverse if inverse else self.transformer.forward
        if not self.dense:
            batch = self.batch_shape(x)
            flat = x.reshape(*batch, -1)
            k = len(self.fixed_index)
            layout = self._layout
            if layout == "prefix":
                fixed, free = flat[..., :k], flat[..., k:]
            elif layout == "suffix":
                fixed, free = flat[..., -k:], flat[..., :-k]
            elif layout in ("even", "odd"):
                first, second = flat[..., 0::2], flat[..., 1::2]
                fixed, free = (first, second) if layout == "even" else (second, first)
            else:
                ordered = permute_last(flat, self.order, self.unorder)
                fixed, free = ordered[..., :k], ordered[..., k:]
            out, ladj = f(free, self._mlp_params(fixed, context))
            if layout == "prefix":
                y = torch.cat([fixed, out], dim=-1)
            elif layout == "suffix":
                y = torch.cat([out, fixed], dim=-1)
            elif layout in ("even", "odd"):
                pair = (fixed, out) if layout == "even" else (out, fixed)
                y = torch.stack(pair, dim=-1).flatten(-2)
            else:
                y = permute_last(torch.cat([fixed, out], dim=-1), self.unorder, self.order)
            return y.reshape(*batch, *self.event_shape), ladj.sum(dim=-1)
        out, ladj = f(x, self._params(x, context))
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        y = torch.where(self.mask, x, out)
        return y, torch.where(self.mask, zero, ladj).sum(dim=(-3, -2, -1))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)


class AdditiveCoupling(Coupling):
    """NICE's additive coupling: ``y_T = x_T + t(x_F, c)``; log-det 0 (volume preserving).

    Inverse ``x_T = y_T - t(y_F, c)``. Cost: one conditioner pass. Keyword options as in
    :class:`Coupling`. A NICE flow needs a scaling layer (``Diagonal``) to change volume.

    References:
        Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation". 2014.

    Examples:
        >>> import torch
        >>> t = AdditiveCoupling(4, mask="half")
        >>> t(torch.randn(2, 4))[1]
        tensor([0., 0.])
    """

    def __init__(self, features: int | Sequence[int], **options: Any) -> None:
        super().__init__(AdditiveTransformer(), features, **options)


class AffineCoupling(Coupling):
    """RealNVP's affine coupling: ``y_T = (x_T + t(x_F, c)) * exp(s(x_F, c))``.

    The normalizing direction is ``x_T = y_T * exp(-s) - t``: Dinh et al.'s
    ``x * exp(s) + t`` on the data side, the shift not scaled. Log-det ``sum_T s``. The
    log-scale is softly bounded, ``-L < s < U`` with ``scale_bound=(L, U)`` (default ``(1, 3)``;
    a number ``B`` means ``(B, B)``, ``None`` no bound; see
    :class:`~flowforge.transforms.transformers.AffineTransformer`): no layer can blow up at
    initialisation, and the density direction stretches by at most ``e^L`` per layer, so that a
    test point outside the training data is not sent exponentially far by a stack of layers
    (as nflows' coupling, whose density side never stretches, but allowing some stretch).
    ``shift_first=False`` gives the other arrangement, ``y_T = x_T * exp(s) + t`` and
    ``x_T = (y_T - t) * exp(-s)``: the same family of maps, trained differently. Files saved
    before format version 2 hold the old defaults, ``shift_first=False, scale_bound=3``, and
    keep them. On the density benchmark the defaults took RealNVP on digits from 4.62 to about
    2.5-2.7 bits/dim and removed every run whose test NLL blew up (``bench/README.md``).
    Cost: one conditioner pass. Other keyword options as in :class:`Coupling`; on images this
    is Glow's coupling with a ResNet conditioner.

    References:
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.
        Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.

    Examples:
        >>> import torch
        >>> t = AffineCoupling((2, 4, 4), mask="channel", hidden=(8,))
        >>> t(torch.randn(3, 2, 4, 4))[0].shape
        torch.Size([3, 2, 4, 4])
    """

    def __init__(
        self,
        features: int | Sequence[int],
        *,
        scale_bound: float | tuple[float, float] | None = (1.0, 3.0),
        shift_first: bool = True,
        **options: Any,
    ) -> None:
        tr = AffineTransformer(scale_bound=scale_bound, shift_first=shift_first)
        super().__init__(tr, features, **options)


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling: ``y_T = RQS(x_T; g(x_F, c))`` on ``[-bound, bound]``.

    ``K = bins`` bins; the conditioner gives ``3K - 1`` parameters per entry (widths,
    heights, interior derivatives; see
    :class:`~flowforge.transforms.transformers.RQSplineTransformer`); the identity outside
    the interval. Log-det ``sum_T log RQS'``; the inverse solves a quadratic per entry.
    ``logit_scale`` multiplies the bin logits (a reparametrisation that sets how fast the
    bins train; see the transformer). Cost: one conditioner pass plus O(n K).

    References:
        Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows". NeurIPS 2019.

    Examples:
        >>> import torch
        >>> t = SplineCoupling(3, bins=4, bound=3.0)
        >>> x = torch.randn(5, 3); bool(torch.allclose(t.inverse(t(x)[0])[0], x))
        True
    """

    def __init__(
        self,
        features: int | Sequence[int],
        *,
        bins: int = 8,
        bound: float = 5.0,
        min_derivative: float = 1e-3,
        logit_scale: float = 1.0,
        **options: Any,
    ) -> None:
        tr = RQSplineTransformer(bins, bound=bound, min_derivative=min_derivative, logit_scale=logit_scale)
        super().__init__(tr, features, **options)
