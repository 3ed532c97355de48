"""MADE: a masked MLP whose outputs for a feature see only the features before it in an ordering.

Every input feature ``j`` gets a degree ``m(j)`` in ``1..d`` (its position in the ordering),
every hidden unit ``k`` a degree ``m(k)`` in ``[lo, d - 1]``; a connection is kept when it
cannot carry information from a feature to itself or to an earlier one:

- input -> hidden and hidden -> hidden: kept iff ``m(k) >= m(j)``;
- hidden -> output parameters of feature ``i``: kept iff ``m(i) > m(k)``.

So the parameters of feature ``i`` are a function of ``{x_j : m(j) < m(i)}`` only (the
autoregressive property), in one network pass. A context vector enters the first layer
with degree 0: it reaches every hidden unit, hence every feature's parameters.

This one implementation is the conditioner of every autoregressive layer in flowforge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ShapeError
from .made_solve import solve_levels
from .mlp import _ACTIVATIONS
from .precision import conditioner_autocast

__all__ = ["MADE", "ORDERINGS"]

ORDERINGS = ("natural", "reverse", "random")


def _input_degrees(features: int, ordering: str | Sequence[int], seed: int) -> Tensor:
    """Degrees ``1..d`` of the inputs: ``degree[j] - 1`` is feature ``j``'s place in the ordering."""
    if isinstance(ordering, str):
        if ordering == "natural":
            order = torch.arange(features)
        elif ordering == "reverse":
            order = torch.arange(features - 1, -1, -1)
        elif ordering == "random":
            order = torch.randperm(features, generator=torch.Generator().manual_seed(int(seed)))
        else:
            raise ValueError(f"unknown ordering {ordering!r}; expected one of {ORDERINGS} or a permutation")
    else:
        order = torch.as_tensor(list(ordering), dtype=torch.long)
        if sorted(order.tolist()) != list(range(features)):
            raise ValueError(f"ordering must be a permutation of 0..{features - 1}; got {order.tolist()}")
    # ``order`` lists the features in the order they are generated; invert it into places.
    return torch.argsort(order) + 1


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: ``(..., d) -> (..., d, n_params)``.

    ``out[..., i, :] = g_i(x_{<i}, c)``, where ``<i`` means earlier in the ordering: the
    Jacobian of the outputs with respect to the inputs is strictly triangular in that
    ordering. Weights are dense ``nn.Linear`` parameters multiplied by fixed 0/1 masks
    (buffers, rebuilt from the constructor arguments, so never saved).

    Hidden degrees are spread evenly over ``[lo, d - 1]`` (``lo = 0`` with a context or for
    ``d = 1``, else 1), deterministically: a layer of at least ``d`` units holds every degree,
    so every allowed dependency is realised.

    Args:
        features: ``d``, the number of input features.
        n_params: outputs per feature.
        hidden: sizes of the hidden layers (``()`` gives a masked linear map).
        context_features: size of a context vector that reaches all hidden units, or ``None``.
        ordering: ``"natural"`` (0, 1, ..., d-1), ``"reverse"``, ``"random"`` (drawn from
            ``seed``), or an explicit permutation listing the features in generation order.
        seed: the seed of ``ordering="random"``.
        activation: one of ``relu``, ``elu``, ``gelu``, ``tanh``, ``silu``.
        zero_last: start the output layer at zero (a layer fed by it starts as the identity).

    Cost: one pass is that of the dense MLP, ``O(d h + h^2 + h d P)`` per sample, plus one
    elementwise product per weight matrix for the masks. :meth:`solve` computes every hidden
    unit once over its ``passes`` sequential steps: about one pass of arithmetic in all, plus a
    few small operations per step; under autograd its memory is that of one pass too (each
    layer keeps running pre-activation sums instead of re-reading the growing activations).

    References:
        Germain, Gregor, Murray, Larochelle. "MADE: Masked Autoencoder for Distribution
        Estimation". ICML 2015.

    Examples:
        >>> import torch
        >>> net = MADE(3, 2, hidden=(16, 16), ordering="random", seed=1)
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
        >>> net.degrees.tolist(), net.passes  # feature 1 comes first, then 2, then 0
        ([3, 1, 2], 3)
        >>> net.dependencies().int()  # row i: the inputs feature i's outputs can see
        tensor([[0, 1, 1],
                [0, 0, 0],
                [0, 1, 0]], dtype=torch.int32)
    """

    def __init__(
        self,
        features: int,
        n_params: int = 1,
        *,
        hidden: Sequence[int] = (64, 64),
        context_features: int | None = None,
        ordering: str | Sequence[int] = "natural",
        seed: int = 0,
        activation: str = "relu",
        zero_last: bool = True,
    ) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"features must be a positive int; got {features!r}")
        if int(n_params) != n_params or n_params < 1:
            raise ValueError(f"n_params must be a positive int; got {n_params!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        if context_features is not None and (
            int(context_features) != context_features or context_features < 1
        ):
            raise ValueError(f"context_features must be a positive int or None; got {context_features!r}")
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive; got {hidden}")
        d, p = int(features), int(n_params)
        self.features, self.n_params = d, p
        self.context_features = None if context_features is None else int(context_features)

        degrees = _input_degrees(d, ordering, seed)
        self.register_buffer("degrees", degrees, persistent=False)
        lo = 0 if (self.context_features is not None or d == 1) else 1
        layer_degrees = [degrees] + [lo + torch.arange(h) * (d - lo) // h for h in hidden]
        out_degrees = degrees.repeat_interleave(p)  # row i * p + q belongs to feature i

        self.layers = nn.ModuleList()
        sizes = [d, *hidden, d * p]
        for i in range(len(sizes) - 1):
            self.layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i + 1 < len(sizes) - 1:
                mask = layer_degrees[i + 1][:, None] >= layer_degrees[i][None, :]
            else:
                mask = out_degrees[:, None] > layer_degrees[i][None, :]
            self.register_buffer(f"mask{i}", mask.to(torch.get_default_dtype()), persistent=False)
        self.context = None
        if self.context_features is not None:
            self.context = nn.Linear(self.context_features, sizes[1], bias=False)
        self.activation = _ACTIVATIONS[activation]()
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)
            if self.context is not None and not hidden:
                nn.init.zeros_(self.context.weight)
        self._build_levels()

    # -- structure ----------------------------------------------------------------------
    def dependencies(self) -> Tensor:
        """Boolean ``(d, d)``: entry ``[i, j]`` says whether feature ``i``'s outputs can depend on ``x_j``.

        Computed from the masks themselves (not from the degrees), so it is what the network
        actually does; it is strictly triangular in the ordering.
        """
        reach = self.mask0.double()
        for i in range(1, len(self.layers)):
            reach = (getattr(self, f"mask{i}").double() @ reach > 0).double()
        return reach[:: self.n_params] > 0

    def _build_levels(self) -> None:
        # Level of a feature = length of the longest dependency chain below it; features of one
        # level only need the ones of lower levels, so ``passes`` = number of levels <= d.
        dep = self.dependencies()
        level = torch.zeros(self.features, dtype=torch.long)
        for i in torch.argsort(self.degrees).tolist():
            parents = dep[i].nonzero().squeeze(-1)
            level[i] = level[parents].max() + 1 if parents.numel() else 0
        index = torch.argsort(level, stable=True)
        sizes = [s for s in torch.bincount(level).tolist() if s > 0]
        rows = (index[:, None] * self.n_params + torch.arange(self.n_params)).reshape(-1)
        self.register_buffer("level_index", index, persistent=False)
        self.register_buffer("level_rows", rows, persistent=False)
        self.register_buffer("level_order", torch.argsort(index), persistent=False)
        self._level_sizes = sizes
        self._build_schedule(index, sizes)

    def _build_schedule(self, index: Tensor, sizes: list[int]) -> None:
        # Which hidden units :meth:`solve` computes at each level: those the level's outputs need
        # that no earlier level computed. A unit only reads inputs of lower levels (else an output
        # would depend on its own level), so its value is final the first time, and every hidden
        # unit is computed at most once over all levels: sampling costs one MADE pass in total.
        hidden = len(self.layers) - 1
        done = [torch.zeros(self.layers[i].out_features, dtype=torch.bool) for i in range(hidden)]
        order: list[list[Tensor]] = [[] for _ in range(hidden)]
        self._unit_counts: list[list[int]] = [[] for _ in range(hidden)]
        start = 0
        for size in sizes:
            rows = self.level_rows[start * self.n_params : (start + size) * self.n_params]
            needed = getattr(self, f"mask{hidden}")[rows].bool().any(0) if hidden else None
            for i in reversed(range(hidden)):
                new = needed & ~done[i]
                done[i] |= new
                order[i].append(new.nonzero().squeeze(-1))
                self._unit_counts[i].append(int(new.sum()))
                needed = getattr(self, f"mask{i}")[new].bool().any(0) if i > 0 else None
            start += size
        for i in range(hidden):
            self.register_buffer(f"units{i}", torch.cat(order[i]), persistent=False)

    @property
    def passes(self) -> int:
        """Sequential steps of :meth:`solve`: the number of dependency levels (``d`` for a full MADE)."""
        return len(self._level_sizes)

    def schedule(self) -> list[list[int]]:
        """Hidden units :meth:`solve` computes at each level, per hidden layer (``[layer][level]``)."""
        return [list(counts) for counts in self._unit_counts]

    # -- evaluation ---------------------------------------------------------------------
    def _masked(self) -> list[tuple[Tensor, Tensor]]:
        buffers = self._buffers  # direct: nn.Module attribute lookup is slow in this hot path
        return [(layer.weight * buffers[f"mask{i}"], layer.bias) for i, layer in enumerate(self.layers)]

    def _context_term(self, context: Tensor | None, x: Tensor) -> Tensor | None:
        if self.context is None:
            return None
        if context is None:
            raise ShapeError(
                f"this MADE is conditional: pass context=<tensor of shape (..., {self.context_features})>"
            )
        if context.dim() < 1 or context.shape[-1] != self.context_features:
            raise ShapeError(
                f"MADE expects a context of shape (..., {self.context_features}); got {tuple(context.shape)}"
            )
        return F.linear(context.to(x.dtype), self.context.weight)

    def _check(self, x: Tensor) -> None:
        if x.dim() < 1 or x.shape[-1] != self.features:
            raise ShapeError(f"MADE expects inputs of shape (..., {self.features}); got {tuple(x.shape)}")

    def _evaluate(self, x: Tensor, ctx: Tensor | None, weights: list[tuple[Tensor, Tensor]]) -> Tensor:
        h = x
        last = len(weights) - 1
        for i, (w, b) in enumerate(weights):
            h = F.linear(h, w, b)
            if i == 0 and ctx is not None:
                h = h + ctx
            if i < last:
                h = self.activation(h)
        return h.unflatten(-1, (-1, self.n_params))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """All parameters in one pass: ``(..., d) -> (..., d, n_params)``.

        The batch shapes of ``x`` and the context broadcast.
        """
        self._check(x)
        with conditioner_autocast(x):
            out = self._evaluate(x, self._context_term(context, x), self._masked())
        return out.to(x.dtype)  # a no-op unless in mixed precision

    def solve(
        self,
        y: Tensor,
        step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
        context: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Solve ``x_i = step(y_i, params_i(x))`` for all ``i`` by passes over the dependency levels.

        ``step(y_part, params_part)`` maps the entries of ``y`` of some features, shape
        ``(..., n)``, with their parameters ``(..., n, n_params)`` to ``(x_part, aux)``, both
        ``(..., n)``. Pass ``k`` computes the features of level ``k`` from the ones already
        solved, so the result is exact after :attr:`passes` passes (no fixed-point iteration).
        Each pass computes only the hidden units and output rows that level needs and no earlier
        level computed, so all passes together cost about one MADE pass (plus a few small
        operations per level), not ``passes`` of them.

        Returns:
            ``(x, aux summed over features)``; ``x`` has the broadcast batch shape of ``y``
            and the context.

        Examples:
            >>> import torch
            >>> net = MADE(3, 1, hidden=(8,))
            >>> with torch.no_grad():
            ...     _ = net.layers[-1].weight.normal_()
            >>> y = torch.randn(4, 3)
            >>> x, _ = net.solve(y, lambda v, p: (v - p[..., 0], torch.zeros_like(v)))
            >>> torch.allclose(x + net(x)[..., 0], y, atol=1e-6)
            True
        """
        self._check(y)
        with conditioner_autocast(y):
            return solve_levels(self, y, step, context)

    def extra_repr(self) -> str:
        ctx = f", context_features={self.context_features}" if self.context_features is not None else ""
        return f"features={self.features}, n_params={self.n_params}, passes={self.passes}{ctx}"
