"""``Flow``: a base distribution pushed through a sequence of transforms.

Sampling runs the transforms forward (base -> data); densities run them inverse
(data -> base):

``log p(x) = log p_base(T^{-1}(x)) + log|det dT^{-1}/dx|``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from .distributions import BaseDistribution
from .errors import ShapeError
from .settings import validation_enabled
from .transforms.base import Compose, Transform

__all__ = ["Flow", "FlowDistribution"]


def _size(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


class Flow(nn.Module):
    """A normalizing flow: ``x = T(z)``, ``z ~ base``.

    Args:
        base: the base distribution (e.g. ``StandardNormal((d,))``).
        transforms: a transform or a sequence of them, applied in order in the generative
            direction (the first one acts on base samples).

    With a context (conditional flows), ``context`` has shape ``(*batch, c)`` and reaches
    every transform; ``sample(shape, context)`` returns ``(*shape, *batch, *event)``.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.LeakyReLU(0.2)])
        >>> x = flow.sample((1000,)); flow.log_prob(x).shape
        torch.Size([1000])
    """

    def __init__(self, base: BaseDistribution, transforms: Transform | Sequence[Transform]) -> None:
        super().__init__()
        if not isinstance(base, BaseDistribution):
            raise TypeError(f"base must be a flowforge.distributions distribution; got {type(base).__name__}")
        self.base = base
        self.transform = transforms if isinstance(transforms, Compose) else Compose(transforms)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Event shape on the data side (that of the base unless a layer reshapes)."""
        shape = self.transform.event_shape
        return tuple(shape) if shape is not None else self.base.event_shape

    @property
    def context_features(self) -> int | None:
        return self.transform.context_features

    # -- directions -----------------------------------------------------------------------
    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction: ``(x, log|det dx/dz|)``."""
        return self.transform(z, context)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction: ``(z, log|det dz/dx|)``."""
        return self.transform.inverse(x, context)

    # -- densities ------------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``x`` (batch shape). ``-inf`` outside the support, never NaN.

        Raises:
            ValueError: when validation is on and ``x`` (or the context) has NaN or inf.
        """
        if validation_enabled():
            if not isinstance(x, Tensor):
                raise TypeError(f"log_prob expects a torch.Tensor; got {type(x).__name__}")
            if not torch.isfinite(x).all():
                bad = (~torch.isfinite(x)).sum().item()
                raise ValueError(
                    f"log_prob got {bad} non-finite value(s) in an input of shape {tuple(x.shape)}; "
                    "clean the data or call flowforge.set_validation(False) to get NaN through"
                )
            if context is not None and not torch.isfinite(context).all():
                raise ValueError("log_prob got a non-finite context")
        z, ladj = self.transform.inverse(x, context)
        return self.base.log_prob(z) + ladj

    def _base_shape(self, shape: int | Sequence[int], context: Tensor | None) -> tuple[int, ...]:
        shape = _size(shape)
        if context is not None:
            if context.dim() < 1:
                raise ShapeError(f"context must have a feature dimension; got shape {tuple(context.shape)}")
            shape = (*shape, *context.shape[:-1])
        return shape

    @staticmethod
    def _expand_context(context: Tensor | None, shape: tuple[int, ...]) -> Tensor | None:
        if context is None:
            return None
        return context.expand(*shape[: len(shape) - (context.dim() - 1)], *context.shape)

    def rsample(self, shape: int | Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Differentiable samples of shape ``(*shape, *context_batch, *event)``."""
        full = self._base_shape(shape, context)
        z = self.base.rsample(full)
        x, _ = self.transform(z, self._expand_context(context, full))
        return x

    def sample(self, shape: int | Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Samples without gradients."""
        with torch.no_grad():
            return self.rsample(shape, context)

    def rsample_and_log_prob(
        self, shape: int | Sequence[int] = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-densities in one generative pass (no inverse): what VI needs."""
        full = self._base_shape(shape, context)
        z, log_pz = self.base.rsample_and_log_prob(full)
        x, ladj = self.transform(z, self._expand_context(context, full))
        return x, log_pz - ladj

    def as_distribution(self, context: Tensor | None = None) -> FlowDistribution:
        """A ``torch.distributions.Distribution`` view (for Pyro and other torch code)."""
        return FlowDistribution(self, context)


class FlowDistribution(Distribution):
    """A :class:`Flow` seen as a ``torch.distributions.Distribution`` (optionally conditioned)."""

    has_rsample = True
    arg_constraints: dict = {}  # noqa: RUF012 - the torch.distributions API
    support = constraints.real_vector

    def __init__(self, flow: Flow, context: Tensor | None = None) -> None:
        self.flow = flow
        self.context = context
        batch = torch.Size(context.shape[:-1]) if context is not None else torch.Size()
        super().__init__(batch_shape=batch, event_shape=torch.Size(flow.event_shape), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.flow.log_prob(value, self.context)

    def rsample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        return self.flow.rsample(tuple(sample_shape), self.context)

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        return self.flow.sample(tuple(sample_shape), self.context)
