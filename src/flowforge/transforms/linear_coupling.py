"""The linear affine coupling of seed 001 (Koehler, Mehta & Risteski): a coupling whose shift is linear.

A :class:`~flowforge.transforms.Coupling` whose conditioner is one linear map and whose
log-scale is a learned constant, so the layer is a linear map with a triangular block
structure: the factor of the depth theorems that the experiment ``linear-coupling`` studies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .coupling import Coupling
from .transformers import AffineTransformer

__all__ = ["LinearAffineCoupling"]


class _LinearShift(nn.Module):
    """``(x_F, c) -> (t, s)`` per transformed entry: ``t = A [x_F, c] + b`` and a constant ``s``."""

    def __init__(self, n_in: int, n_free: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_free)
        self.log_scale = nn.Parameter(torch.zeros(n_free))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, inp: Tensor) -> Tensor:
        t = self.linear(inp)
        return torch.stack([t, self.log_scale.to(t.dtype).expand_as(t)], dim=-1).flatten(-2)


class LinearAffineCoupling(Coupling):
    """The linear affine coupling of Koehler, Mehta & Risteski: ``y_T = B x_T + A x_F (+ C c + b)``.

    ``B = diag(exp(s))`` is a learned positive diagonal that does not depend on the input
    and ``A`` a learned dense matrix, so the layer is the linear map with block matrix
    ``[[I, 0], [A, B]]`` (``flip=True`` gives ``[[B', A'], [0, I]]``), exactly the
    factors of their Theorems 2 and 3 (seed 001): at most 24 alternating pairs represent
    any ``2d x 2d`` matrix with positive determinant, and 2 pairs do not suffice in general.
    Log-det ``sum s``; inverse ``x_T = B^{-1}(y_T - A y_F - C c - b)``. A context enters
    the shift linearly. Cost O(|F| |T|). Starts at the identity.

    Args:
        features: the event size.
        mask: as in :class:`Coupling`; ``"half"`` (the first half fixed, as in the theorems).
        flip: use the complementary half.
        seed: the seed of ``mask="random"``.
        context_features: size of the context vector for a conditional layer.

    References:
        Koehler, Mehta, Risteski. "Representational aspects of depth and conditioning in
        normalizing flows". ICML 2021.

    Examples:
        >>> import torch
        >>> t = LinearAffineCoupling(4)
        >>> with torch.no_grad():
        ...     _ = t.net.linear.weight.fill_(1.0)
        >>> t.matrix()
        tensor([[1., 0., 0., 0.],
                [0., 1., 0., 0.],
                [1., 1., 1., 0.],
                [1., 1., 0., 1.]])
    """

    def __init__(
        self,
        features: int,
        *,
        mask: str | Sequence = "half",
        flip: bool = False,
        seed: int | None = None,
        context_features: int | None = None,
    ) -> None:
        super().__init__(
            AffineTransformer(scale_bound=None),
            features,
            mask=mask,
            flip=flip,
            seed=seed,
            context_features=context_features,
            conditioner="mlp",
        )

    def _mlp(self, n_in: int, n_free: int, hidden: Sequence[int], activation: str) -> nn.Module:
        return _LinearShift(n_in, n_free)

    @torch.no_grad()
    def matrix(self) -> Tensor:
        """The ``d x d`` matrix of the linear part of the forward map (without context and bias)."""
        d = self.event_shape[0]
        m = torch.zeros(d, d, dtype=self.net.log_scale.dtype, device=self.net.log_scale.device)
        fixed, free = self.fixed_index, self.free_index
        m[fixed, fixed] = 1.0
        m[free, free] = self.net.log_scale.exp()
        m[free[:, None], fixed[None, :]] = self.net.linear.weight[:, : len(fixed)]
        return m
