"""Partitions of an event into a fixed part and a transformed part, for coupling layers.

A mask is a boolean tensor of the event's shape: ``True`` marks the entries a coupling
keeps fixed and feeds to its conditioner, ``False`` the entries it transforms (the
``b`` of Dinh et al. 2016). Every mask here has at least one entry of each kind, and
``~mask`` (``flip=True``) is the complementary partition, so two couplings with
``flip=False`` and ``flip=True`` transform every entry once.

Vectors ``(d,)``: ``"half"`` (the first ``ceil(d/2)`` fixed), ``"alternate"`` (even
indices fixed), ``"random"`` (``ceil(d/2)`` fixed entries drawn once from ``seed``).
Images ``(C, H, W)``: ``"checkerboard"`` (pixels with ``h + w`` even fixed, in every
channel) and ``"channel"`` (the first ``ceil(C/2)`` channels fixed); the vector kinds act
on the flattened image.

References:
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.

Examples:
    >>> make_mask("alternate", (5,)).int()
    tensor([1, 0, 1, 0, 1], dtype=torch.int32)
    >>> make_mask("checkerboard", (1, 2, 3), flip=True).int()
    tensor([[[0, 1, 0],
             [1, 0, 1]]], dtype=torch.int32)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ShapeError

__all__ = ["MASK_KINDS", "as_mask", "make_mask"]

MASK_KINDS = ("half", "alternate", "random", "checkerboard", "channel")


def _vector(kind: str, n: int, seed: int | None) -> Tensor:
    keep = (n + 1) // 2
    if kind == "half":
        return torch.arange(n) < keep
    if kind == "alternate":
        return torch.arange(n) % 2 == 0
    # kind == "random": a balanced random partition, reproducible from the seed.
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:keep]] = True
    return mask


def make_mask(
    kind: str, shape: int | Sequence[int], *, flip: bool = False, seed: int | None = None
) -> Tensor:
    """The boolean mask of the named partition (``True`` = fixed) for an event shape.

    Args:
        kind: one of :data:`MASK_KINDS`.
        shape: the event shape, ``(d,)`` or ``(C, H, W)`` (an int means ``(d,)``).
        flip: return the complementary partition.
        seed: the seed of ``kind="random"`` (``None`` draws from the global generator).

    Raises:
        ValueError: for an unknown kind, or a shape too small to split into two parts.
    """
    shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    numel = int(torch.Size(shape).numel())
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {list(MASK_KINDS)}")
    if numel < 2 or any(s < 1 for s in shape):
        raise ValueError(f"a coupling needs an event of at least 2 elements to split; got shape {shape}")
    if kind in ("checkerboard", "channel"):
        if len(shape) != 3:
            raise ValueError(f"mask kind {kind!r} is for images (C, H, W); got event shape {shape}")
        c, h, w = shape
        if kind == "checkerboard":
            if h * w < 2:
                raise ValueError(f"a checkerboard mask needs H * W >= 2; got shape {shape}")
            grid = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0
            mask = grid.expand(c, h, w).clone()
        else:
            if c < 2:
                raise ValueError(f"a channel mask needs at least 2 channels; got shape {shape}")
            mask = (torch.arange(c) < (c + 1) // 2)[:, None, None].expand(c, h, w).clone()
    else:
        mask = _vector(kind, numel, seed).reshape(shape)
    return ~mask if flip else mask


def as_mask(
    mask: str | Sequence, shape: Sequence[int], *, flip: bool = False, seed: int | None = None
) -> Tensor:
    """A mask from a kind name or from explicit 0/1 (or bool) entries, validated against ``shape``.

    Raises:
        ShapeError: explicit entries whose shape is not the event shape.
        ValueError: a mask with no fixed or no transformed entry, or entries other than 0/1.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(mask, str):
        return make_mask(mask, shape, flip=flip, seed=seed)
    values = torch.as_tensor(mask)
    if tuple(values.shape) != shape:
        raise ShapeError(f"an explicit mask must have the event shape {shape}; got {tuple(values.shape)}")
    if values.dtype != torch.bool:
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError("an explicit mask must hold only 0/1 or booleans")
        values = values == 1
    if bool(values.all()) or not bool(values.any()):
        raise ValueError("a mask must mark at least one fixed (1) and one transformed (0) entry")
    return ~values if flip else values.clone()
