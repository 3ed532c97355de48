"""Training data for maximum likelihood: checks, the train/validation split and minibatch sampling."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..datasets.files import DataError, check_finite
from ..datasets.memmap import MemmapData
from ..errors import ShapeError

__all__ = ["EpochSampler", "as_data", "digest", "split"]


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def as_data(data: object, event_shape: Sequence[int], what: str = "data") -> Tensor:
    """``data`` (tensor, array or nested lists) as a finite floating tensor of shape ``(n, *event)``."""
    if not isinstance(data, Tensor):
        try:
            data = torch.as_tensor(np.asarray(data))
        except (TypeError, ValueError) as e:
            raise DataError(f"{what} cannot be read as a numeric array: {e}") from e
    if not (data.is_floating_point() or data.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8)):
        raise DataError(f"{what} must hold numbers; got dtype {data.dtype}")
    event = tuple(event_shape)
    if data.dim() != len(event) + 1 or tuple(data.shape[1:]) != event:
        hint = " (one feature: reshape it to (n, 1))" if data.dim() == 1 and event == (1,) else ""
        raise ShapeError(
            f"{what} must have shape (n, {', '.join(map(str, event))}) to match the flow's event shape "
            f"{_shape(event)}; got {_shape(data.shape)}{hint}"
        )
    if data.shape[0] < 1:
        raise DataError(f"{what} has no rows")
    check_finite(data, what)
    return data if data.is_floating_point() else data.to(torch.get_default_dtype())


def split(n: int, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Random train and validation row indices (``None`` for no validation).

    Example:
        >>> train, val = split(10, 0.2, torch.Generator().manual_seed(0)); len(train), len(val)
        (8, 2)
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    perm = torch.randperm(n, generator=generator)
    n_val = round(n * val_fraction)
    if val_fraction > 0:
        n_val = max(n_val, 1)
        if n - n_val < 1:
            raise DataError(f"{n} row(s) cannot be split into training and validation data; pass more data")
    if n_val == 0:
        return perm, None
    return perm[n_val:], perm[:n_val]


class EpochSampler:
    """Minibatch row indices: a fresh random permutation per epoch, cut into full batches.

    The generator's state at the start of the epoch travels with checkpoints (not the
    permutation, which would cost 8 bytes per row in every checkpoint), so a resumed run
    redraws the epoch's permutation and then the same batches.

    Example:
        >>> s = EpochSampler(10, 4, seed=0); [len(s.next()) for _ in range(3)]
        [4, 4, 4]
    """

    def __init__(self, n: int, batch_size: int, *, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        self.n, self.batch_size = int(n), min(int(batch_size), int(n))
        self.generator = torch.Generator().manual_seed(int(seed))
        self._shuffle()
        self.pos = 0
        self.epoch = 0

    def next(self) -> Tensor:
        if self.pos + self.batch_size > self.n:
            self._shuffle()
            self.pos = 0
            self.epoch += 1
        out = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return out

    def _shuffle(self) -> None:
        self.epoch_generator = self.generator.get_state()
        self.perm = torch.randperm(self.n, generator=self.generator)

    def state_dict(self) -> dict:
        return {"epoch_generator": self.epoch_generator, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        if "perm" in state:  # checkpoints written before the permutation was left out
            self.generator.set_state(state["generator"].cpu())
            self.perm = state["perm"].cpu()
        else:
            self.generator.set_state(state["epoch_generator"].cpu())
            self._shuffle()
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])


def digest(*tensors: Tensor | MemmapData | None) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if isinstance(t, MemmapData):
            h.update(t.scan().digest.encode())  # cached from the streaming pass
        elif t is not None:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
