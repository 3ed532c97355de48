"""The sequential direction of a MADE: solve ``x_i = step(y_i, params_i(x))`` level by level.

This is :meth:`flowforge.nets.MADE.solve` (see its docstring for the contract): the solver of
every autoregressive layer's sequential direction (MAF sampling, IAF density), kept apart from
the network so that ``made.py`` holds the masks and the one-pass evaluation. It reads the
MADE's schedule (``level_index``, ``level_rows``, ``units<i>``, the level and unit counts)
built once at construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..transforms._permute import permute_last

if TYPE_CHECKING:
    from .made import MADE

__all__ = ["solve_levels"]


def solve_levels(
    net: MADE, y: Tensor, step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], context: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``net.solve(y, step, context)`` without the input checks and autocast (see :meth:`MADE.solve`).

    Returns ``(x, aux summed over features)``. Without autograd the activations go into buffers
    (sampling); under autograd :func:`_solve_pending` keeps memory linear in ``d``.
    """
    ctx = net._context_term(context, y)
    batch = y.shape[:-1] if ctx is None else torch.broadcast_shapes(y.shape[:-1], ctx.shape[:-1])
    hidden = len(net.layers) - 1
    # Work in computation order: features by level, hidden units in the order they are first
    # needed. Each layer's activations then grow by appending (no scatter), and a unit only
    # reads a prefix of the layer below, since everything it depends on was computed earlier.
    orders = [net.level_index] + [getattr(net, f"units{i}") for i in range(hidden)]
    weights, biases = [], []
    for i, (w, b) in enumerate(net._masked()):
        rows = net.level_rows if i == hidden else orders[i + 1]
        weights.append(w.index_select(0, rows).index_select(1, orders[i]))
        biases.append(b.index_select(0, rows))
    if ctx is not None:
        ctx = ctx.index_select(-1, net.level_rows if hidden == 0 else orders[1])
    y = y.expand(*batch, net.features).index_select(-1, net.level_index)
    if torch.is_grad_enabled():
        return _solve_pending(net, y, step, ctx, batch, weights, biases)
    # Without autograd (sampling) the activations are written into preallocated buffers.
    widths = [net.features] + [len(o) for o in orders[1:]]
    acts = [y.new_empty(*batch, n) for n in widths]  # solved x, then each layer
    total = y.new_zeros(batch)
    offsets = [0] * (hidden + 1)
    p = net.n_params
    for level, size in enumerate(net._level_sizes):
        for i in range(hidden):
            count = net._unit_counts[i][level]
            if count == 0:
                continue
            lo, known = offsets[i + 1], offsets[i]
            w, b = weights[i][lo : lo + count, :known], biases[i][lo : lo + count]
            new = F.linear(acts[i][..., :known], w, b)
            if i == 0 and ctx is not None:
                new = new + ctx[..., lo : lo + count]
            acts[i + 1][..., lo : lo + count] = net.activation(new)
            offsets[i + 1] += count
        lo, known = offsets[0], offsets[hidden]
        rows = slice(lo * p, (lo + size) * p)
        out = F.linear(acts[hidden][..., :known], weights[hidden][rows, :known], biases[hidden][rows])
        if hidden == 0 and ctx is not None:
            out = out + ctx[..., rows]
        # The transformer runs in y's dtype even in mixed precision (a no-op cast otherwise).
        part, aux = step(y[..., lo : lo + size], out.to(y.dtype).unflatten(-1, (size, p)))
        acts[0][..., lo : lo + size] = part
        offsets[0] += size
        total = total + aux.sum(-1)
    return permute_last(acts[0], net.level_order, net.level_index), total


def _solve_pending(
    net: MADE,
    y: Tensor,
    step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    ctx: Tensor | None,
    batch: torch.Size,
    weights: list[Tensor],
    biases: list[Tensor],
) -> tuple[Tensor, Tensor]:
    """:meth:`solve` under autograd, in memory linear in ``d``.

    Appending each level's units to the activations and multiplying the whole prefix would
    make autograd keep every prefix: memory ``O(levels B (d + h))``, quadratic in ``d``. Here
    each layer keeps the pre-activations of its units not computed yet, starting from the
    bias; a new block of units adds its contribution to the layer above at once, so every
    product reads only the new block (which autograd keeps anyway) and the pending sums are
    dropped as they shrink. The arithmetic is that of one MADE pass plus one addition per
    level and layer.
    """
    hidden = len(net.layers) - 1
    p = net.n_params
    pending = [b.expand(*batch, b.shape[-1]) for b in biases]  # per product, rows not computed yet
    if ctx is not None:
        pending[0] = pending[0] + ctx
    taken = [0] * (hidden + 1)  # rows of each product already computed
    columns = [0] * (hidden + 1)  # units of each layer's input already contributed

    def contribute(i: int, block: Tensor) -> None:
        c0 = columns[i]
        columns[i] += block.shape[-1]
        if pending[i].shape[-1]:
            pending[i] = pending[i] + F.linear(block, weights[i][taken[i] :, c0 : columns[i]])

    parts, total, lo = [], y.new_zeros(batch), 0
    for level, size in enumerate(net._level_sizes):
        for i in range(hidden):
            count = net._unit_counts[i][level]
            if count == 0:
                continue
            h = net.activation(pending[i][..., :count])
            pending[i], taken[i] = pending[i][..., count:], taken[i] + count
            contribute(i + 1, h)
        out = pending[hidden][..., : size * p]
        pending[hidden], taken[hidden] = pending[hidden][..., size * p :], taken[hidden] + size * p
        # The transformer runs in y's dtype even in mixed precision (a no-op cast otherwise).
        part, aux = step(y[..., lo : lo + size], out.to(y.dtype).unflatten(-1, (size, p)))
        parts.append(part)
        lo += size
        total = total + aux.sum(-1)
        contribute(0, part)
    x = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
    return permute_last(x, net.level_order, net.level_index), total
