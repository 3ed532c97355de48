"""Base distributions of flows: tensors in, log-densities summed over the event out.

Each is an ``nn.Module`` (so it moves with ``.to(device)`` and its parameters train with
the flow) with ``log_prob(z)``, ``rsample(shape)``, ``sample(shape)`` and
``event_shape``. ``log_prob`` returns the batch shape: the event dimensions are summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import ShapeError
from .spec import Recorded

__all__ = ["BaseDistribution", "DiagNormal", "StandardNormal", "StudentT"]


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    out = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if any(s < 1 for s in out):
        raise ValueError(f"event shape must have positive sizes; got {shape!r}")
    return out


def _size(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


class BaseDistribution(Recorded, nn.Module):
    """Interface of a base distribution over events of shape ``event_shape``."""

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__()
        self.event_shape = _shape(shape)
        # A buffer that carries the device and dtype of the module for sampling.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def event_dim(self) -> int:
        return len(self.event_shape)

    def _check(self, z: Tensor) -> None:
        n = self.event_dim
        if tuple(z.shape[z.dim() - n :]) != self.event_shape or z.dim() < n:
            expected = ", ".join(map(str, self.event_shape))
            raise ShapeError(
                f"{type(self).__name__}.log_prob expects shape (..., {expected}); got {tuple(z.shape)}"
            )

    def _sum_event(self, v: Tensor) -> Tensor:
        return v.sum(dim=tuple(range(-self.event_dim, 0)))

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def rsample(self, shape: int | Sequence[int] = ()) -> Tensor:
        raise NotImplementedError

    def sample(self, shape: int | Sequence[int] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(shape)

    def rsample_and_log_prob(self, shape: int | Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        z = self.rsample(shape)
        return z, self.log_prob(z)

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}"


class StandardNormal(BaseDistribution):
    """``N(0, I)`` over events of the given shape.

    Examples:
        >>> StandardNormal((2,)).log_prob(torch.zeros(3, 2))
        tensor([-1.8379, -1.8379, -1.8379])
    """

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        # square() keeps only z for backward; -0.5 * z * z kept z and -0.5 z (one batch-sized tensor more).
        return -0.5 * self._sum_event(z.square()) - 0.5 * math.log(2 * math.pi) * math.prod(self.event_shape)

    def rsample(self, shape: int | Sequence[int] = ()) -> Tensor:
        a = self._anchor
        return torch.randn(*_size(shape), *self.event_shape, dtype=a.dtype, device=a.device)


class DiagNormal(BaseDistribution):
    """``N(loc, diag(scale^2))`` with learnable (``trainable=True``) or fixed loc and scale.

    Examples:
        >>> d = DiagNormal((2,), trainable=False); d.rsample((4,)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        trainable: bool = True,
        loc: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__(shape)
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale}")
        loc_t = torch.full(self.event_shape, float(loc))
        log_scale_t = torch.full(self.event_shape, math.log(scale))
        if trainable:
            self.loc = nn.Parameter(loc_t)
            self.log_scale = nn.Parameter(log_scale_t)
        else:
            self.register_buffer("loc", loc_t)
            self.register_buffer("log_scale", log_scale_t)

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return self._sum_event(-0.5 * u.square() - self.log_scale - 0.5 * math.log(2 * math.pi))

    def rsample(self, shape: int | Sequence[int] = ()) -> Tensor:
        eps = torch.randn(*_size(shape), *self.event_shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps * torch.exp(self.log_scale)


class StudentT(BaseDistribution):
    """Independent Student-t components with ``df`` degrees of freedom: a heavy-tailed base.

    Heavy-tailed targets cannot be reached from a Gaussian base by a Lipschitz flow
    (Jaini et al. 2020); a t base fixes the tails.

    References:
        Jaini, Kobyzev, Yu, Brubaker. "Tails of Lipschitz Triangular Flows". ICML 2020.

    Examples:
        >>> StudentT((3,), df=4.0).rsample((5,)).shape
        torch.Size([5, 3])
    """

    def __init__(self, shape: int | Sequence[int], df: float = 5.0) -> None:
        super().__init__(shape)
        if not df > 0:
            raise ValueError(f"df must be positive; got {df}")
        self.df = float(df)

    def log_prob(self, z: Tensor) -> Tensor:
        self._check(z)
        v = self.df
        const = math.lgamma((v + 1) / 2) - math.lgamma(v / 2) - 0.5 * math.log(v * math.pi)
        return self._sum_event(const - (v + 1) / 2 * torch.log1p(z * z / v))

    def rsample(self, shape: int | Sequence[int] = ()) -> Tensor:
        a = self._anchor
        size = (*_size(shape), *self.event_shape)
        normal = torch.randn(size, dtype=a.dtype, device=a.device)
        df = torch.full(size, self.df, dtype=a.dtype, device=a.device)
        chi2 = torch.distributions.Chi2(df).sample()
        return normal * torch.rsqrt(chi2 / self.df)

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, df={self.df}"
