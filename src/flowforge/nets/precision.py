"""Mixed precision for conditioner networks only.

Inside :func:`conditioner_precision` the conditioners of coupling and autoregressive layers
(:class:`~flowforge.nets.MADE` and the MLPs / ResNets of couplings) run their matrix products
under ``torch.autocast`` in a low precision (bfloat16), and hand their outputs back in the
dtype of the layer's input. Everything else stays in that dtype (float32): the transformers,
every log-determinant and its sum over features and layers, linear and permutation layers, and
the base density. So a flow's log-density only sees the conditioners' rounding, not a
low-precision accumulation. ``flowforge.fit(..., mixed_precision="bf16")`` trains this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "conditioner_autocast", "conditioner_precision"]

PRECISIONS = {"bf16": torch.bfloat16}
_DTYPE: torch.dtype | None = None


@contextlib.contextmanager
def conditioner_precision(precision: str | None) -> Iterator[None]:
    """Run conditioners in ``precision`` (``"bf16"``, or ``None`` for the input's dtype) in a block.

    Examples:
        >>> import torch
        >>> from flowforge import models
        >>> flow = models.MAF(3, transforms=2, hidden=(16,))
        >>> with conditioner_precision("bf16"):
        ...     lp = flow.log_prob(torch.randn(4, 3))
        >>> lp.dtype
        torch.float32
    """
    global _DTYPE
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)} or None; got {precision!r}")
    previous = _DTYPE
    _DTYPE = None if precision is None else PRECISIONS[precision]
    try:
        yield
    finally:
        _DTYPE = previous


def conditioner_autocast(like: Tensor) -> contextlib.AbstractContextManager:
    """The autocast context of a conditioner call on ``like``'s device (a no-op when off)."""
    if _DTYPE is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=like.device.type, dtype=_DTYPE)
