"""A cap on the memory that building a model from an untrusted config may allocate.

:func:`flowforge.load` builds the architecture named in ``config.json`` before it loads the
weights. Most layers can be built on the ``meta`` device first (nothing allocated) and their
shapes compared with the size-checked weights; layers whose constructors need real values
(masks computed with ``nonzero``, buffers copied from data) cannot, so a crafted config asking
for ``hidden: [1000000, 1000000]`` would allocate terabytes before any check. Under
:func:`allocation_limit`, every new tensor made by a torch function is counted (factory
functions such as ``torch.empty`` before they allocate) and the build stops with
:class:`AllocationLimitError` past the cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .errors import FlowforgeError

__all__ = ["AllocationLimitError", "allocation_limit"]


class AllocationLimitError(FlowforgeError):
    """Building would allocate more than the allowed number of bytes."""


# Factory functions whose size comes first (as a tuple or as separate ints): checked before they run.
_SIZED = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn}


def _requested(func: Any, args: tuple, kwargs: dict) -> int:
    if func in _SIZED:
        size = args[0] if args and not isinstance(args[0], int) else args
        if func is torch.full:
            size = args[0] if args else kwargs.get("size")
        size = kwargs.get("size", size)
    elif func is torch.eye:
        size = [args[0], args[1] if len(args) > 1 and isinstance(args[1], int) else args[0]] if args else []
    elif func is torch.randperm:
        size = args[:1]
    else:
        return 0
    if not isinstance(size, list | tuple) or not all(isinstance(s, int) for s in size):
        return 0
    dtype = kwargs.get("dtype") or (torch.int64 if func is torch.randperm else torch.get_default_dtype())
    return math.prod(size) * torch.empty((), dtype=dtype, device="meta").element_size()


class _Counter(TorchFunctionMode):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.total = int(limit), 0

    def _check(self, name: str) -> None:
        if self.total > self.limit:
            raise AllocationLimitError(
                f"{name} would bring the allocations to {self.total} bytes, over the limit of {self.limit}"
            )

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        self.total += _requested(func, args, kwargs)
        self._check(f"torch.{name}")
        before = self.total
        out = func(*args, **kwargs)
        # New tensors only: not views (they share storage) and not inputs returned by in-place ops.
        inputs = {id(a) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, list | tuple) else (out,):
            fresh = isinstance(t, torch.Tensor) and t._base is None and id(t) not in inputs
            if fresh and t.device.type != "meta":
                self.total += t.numel() * t.element_size()
        if func in _SIZED or func in (torch.eye, torch.randperm):
            self.total = max(before, self.total - _requested(func, args, kwargs))  # counted twice
        self._check(f"torch.{name}")
        return out


@contextmanager
def allocation_limit(max_bytes: int) -> Iterator[None]:
    """Raise :class:`AllocationLimitError` once tensors created inside exceed ``max_bytes`` in total.

    Counts every tensor created (temporaries too), so it over-estimates the peak: use a
    generous cap. Factory operations are checked before they allocate.

    Examples:
        >>> with allocation_limit(10_000):
        ...     _ = torch.zeros(100)
        >>> try:
        ...     with allocation_limit(10_000):
        ...         _ = torch.empty(10**12)
        ... except AllocationLimitError as e:
        ...     print(str(e).split(" would")[0])
        torch.empty
    """
    with _Counter(max_bytes):
        yield
