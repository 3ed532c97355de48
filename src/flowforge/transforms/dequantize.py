"""Dequantization of discrete data (pixel levels) and bits per dimension.

A continuous density ``p`` cannot be fitted to integer data ``x in {0, ..., K-1}^D`` by
maximum likelihood (it would put infinite density on the grid). Dequantization adds noise
``u in [0, 1)^D`` and models ``y = (x + u) / K in [0, 1)^D`` instead. For any noise
distribution ``q(u | x)`` on the unit cube, Jensen's inequality gives a lower bound on the
probability of the discrete data:

``log P(x) >= E_{u ~ q(u|x)} [ log p(y) - D log K - log q(u | x) ]``,

with ``-D log K`` the change of variables from ``x + u`` to ``y``. Uniform dequantization
(:func:`uniform_dequantize`) is ``q = U[0, 1)^D`` (``log q = 0``); variational
dequantization (:class:`VariationalDequantizer`) learns ``q`` as a flow conditioned on
``x`` and tightens the bound (the gap is ``KL(q(u|x) || p(u|x))``). Either way the number
reported is a *training-time bound*: an upper bound on the true bits per dimension.

References:
    Theis, van den Oord, Bethge. "A note on the evaluation of generative models". ICLR 2016.
    Ho, Chen, Srinivas, Duan, Abbeel. "Flow++". ICML 2019 (variational dequantization).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..distributions import StandardNormal
from ..flow import Flow
from .coupling import AFFINE_COUPLING_V1, AffineCoupling
from .elementwise import Sigmoid
from .parametric import Elementwise, _event_shape
from .transformers import AffineTransformer

__all__ = ["VariationalDequantizer", "bits_per_dim", "uniform_dequantize"]


def _check_levels(x: Tensor, levels: int) -> None:
    if levels < 2:
        raise ValueError(f"levels must be at least 2; got {levels}")
    if x.is_floating_point() and not bool((x == x.round()).all()):
        raise ValueError("dequantization expects integer-valued data (pixel levels)")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= levels):
        raise ValueError(
            f"data must lie in 0..{levels - 1} for levels={levels}; "
            f"got values in {int(x.min())}..{int(x.max())}"
        )


def uniform_dequantize(x: Tensor, levels: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``(x + u) / levels`` with ``u ~ U[0, 1)`` per entry: discrete levels to ``[0, 1)`` (float32).

    Train and evaluate a flow on the result; report :func:`bits_per_dim` with
    ``levels=levels``.

    Raises:
        ValueError: non-integer data, or values outside ``0..levels-1``.

    Examples:
        >>> import torch
        >>> y = uniform_dequantize(torch.tensor([0, 3, 16]), 17, generator=torch.Generator().manual_seed(0))
        >>> bool(((y * 17).floor() == torch.tensor([0.0, 3.0, 16.0])).all())
        True
    """
    _check_levels(x, levels)
    # A generator draws on its own device; the noise then moves to the data's.
    u = torch.rand(x.shape, generator=generator, device=generator.device if generator else x.device)
    u = u.to(x.device)
    return (x.to(u.dtype) + u) / levels


def bits_per_dim(nll: Tensor | float, dims: int, levels: int | None = None) -> Tensor | float:
    """Bits per dimension from a negative log-likelihood in nats.

    ``bpd = (nll + dims * log(levels)) / (dims * log 2)``: with ``levels`` given, ``nll`` is
    that of the dequantized data rescaled to ``[0, 1)`` (as from :func:`uniform_dequantize`),
    and ``dims * log(levels)`` converts it to the density of ``x + u`` on the level scale,
    whose integral over a unit cell bounds the probability of the discrete ``x``. Pass
    ``levels=None`` for an NLL already on that scale (e.g. ``-VariationalDequantizer.elbo``).

    Examples:
        >>> round(bits_per_dim(0.0, 64, levels=256), 6)  # uniform on [0, 1): 8 bits per pixel
        8.0
        >>> round(bits_per_dim(64 * math.log(2), 64), 6)
        1.0
    """
    if dims < 1:
        raise ValueError(f"dims must be positive; got {dims}")
    offset = 0.0 if levels is None else dims * math.log(levels)
    return (nll + offset) / (dims * math.log(2.0))


class VariationalDequantizer(nn.Module):
    """A learned noise distribution ``q(u | x)`` on ``[0, 1)^D``: a conditional flow over the noise.

    ``u = sigmoid(g(eps; x))``, ``eps ~ N(0, I)``, where ``g`` is a conditional elementwise
    affine layer followed by ``layers`` affine couplings with alternating masks (checkerboard
    for images), all conditioned on the centred data ``x / K - 1/2`` (flattened: the
    context is ``D`` features, broadcast as ``D`` channels in a ResNet conditioner, so keep it
    to small images). ``log q(u | x)`` comes from the same pass. Train it jointly with the
    model by maximising :meth:`elbo`, a lower bound on ``log P(x)`` valid for every
    ``q``; at evaluation its samples give an upper bound on bits per dimension, tighter than
    uniform noise once trained (the bound, not the exact likelihood).

    Args:
        shape: the event shape of the data (``(d,)`` or ``(C, H, W)``).
        levels: the number of discrete levels ``K``.
        layers: the number of couplings.
        hidden: hidden sizes of the conditioners.

    Cost: one pass of the noise flow per sample.

    References:
        Ho, Chen, Srinivas, Duan, Abbeel. "Flow++". ICML 2019.

    Examples:
        >>> import torch, flowforge as ff
        >>> deq = VariationalDequantizer((4,), levels=17, hidden=(16,))
        >>> flow = ff.Flow(ff.distributions.StandardNormal((4,)), [ff.transforms.AffineCoupling(4)])
        >>> x = torch.randint(0, 17, (8, 4))
        >>> bound = deq.elbo(flow, x); bound.shape, bool(torch.isfinite(bound).all())
        (torch.Size([8]), True)
    """

    def __init__(
        self, shape: int | Sequence[int], levels: int, *, layers: int = 2, hidden: Sequence[int] = (64,)
    ) -> None:
        super().__init__()
        self.event_shape = _event_shape(shape)
        self.levels = int(levels)
        self.dims = int(torch.Size(self.event_shape).numel())
        d = self.dims
        mask = "checkerboard" if len(self.event_shape) == 3 else "alternate"
        steps = [Elementwise(AffineTransformer(), self.event_shape, context_features=d, hidden=hidden)]
        # The version-1 couplings keep the noise flow of checkpoints made before AffineCoupling's
        # defaults changed (format version 2) loadable as the same map.
        options = {"context_features": d, "hidden": hidden, **AFFINE_COUPLING_V1}
        steps += [
            AffineCoupling(self.event_shape, mask=mask, flip=bool(i % 2), **options) for i in range(layers)
        ]
        steps.append(Sigmoid(event_dim=len(self.event_shape)))
        self.noise = Flow(StandardNormal(self.event_shape), steps)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, log q(u | x))`` with ``y = (x + u) / K`` and ``u ~ q(u | x)`` (reparameterised)."""
        _check_levels(x, self.levels)
        n = len(self.event_shape)
        xf = x.to(next(self.parameters()).dtype)
        context = (xf / self.levels - 0.5).flatten(start_dim=xf.dim() - n)
        u, log_q = self.noise.rsample_and_log_prob((), context=context)
        return (xf + u) / self.levels, log_q

    def elbo(self, flow: Flow, x: Tensor, context: Tensor | None = None) -> Tensor:
        """One-sample lower bound on ``log P(x)`` of the discrete data, per sample (nats).

        ``log p(y) - D log K - log q(u | x)`` for the ``flow`` modelling ``y`` on ``[0, 1)``;
        ``bits_per_dim(-elbo.mean(), D)`` is then an upper bound on bits per dimension.
        """
        y, log_q = self(x)
        return flow.log_prob(y, context) - self.dims * math.log(self.levels) - log_q
