"""Training data for maximum likelihood: checks, the validation split, the standardizer, minibatches."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..datasets.files import DataError, check_finite
from ..datasets.memmap import MemmapData
from ..errors import ShapeError
from ..flow import Flow
from ..transforms.base import Compose
from ..transforms.standardize import Standardize
from .history import History

log = logging.getLogger("flowforge.train")

__all__ = ["EpochSampler", "as_data", "attach_standardizer", "checked_inputs", "digest", "holdout", "split"]


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

    Examples:
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

    Examples:
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


def checked_inputs(
    flow: Flow, data: Tensor | np.ndarray | MemmapData, context: Tensor | None
) -> tuple[Tensor | MemmapData, Tensor | None]:
    """``fit``'s data and context, checked against the flow (shapes, finiteness, conditioning).

    Raises:
        ShapeError: data or context of the wrong shape, a context missing or given in vain.
        DataError: non-finite or non-numeric data, no rows.
        ValueError: memory-mapped data for a conditional flow.
    """
    lazy = isinstance(data, MemmapData)
    data = data.checked(flow.event_shape) if lazy else as_data(data, flow.event_shape)
    n = data.shape[0]
    if lazy and (context is not None or flow.context_features is not None):
        raise ValueError("memory-mapped data (MemmapData) train unconditional flows only; pass a tensor")
    if flow.context_features is not None:
        if context is None:
            raise ShapeError(
                f"the flow is conditional: pass context= of shape ({n}, {flow.context_features})"
            )
        context = as_data(context, (flow.context_features,), "context")
        if context.shape[0] != n:
            raise ShapeError(f"context has {context.shape[0]} rows, data has {n}; they must match")
    elif context is not None:
        raise ShapeError("context= was given but the flow is not conditional (no layer takes a context)")
    return data, context


def holdout(
    flow: Flow,
    data: Tensor | MemmapData,
    context: Tensor | None,
    val_data: Tensor | np.ndarray | MemmapData | None,
    val_context: Tensor | None,
    val_fraction: float,
    *,
    seed: int,
) -> tuple[Tensor, Tensor | MemmapData, Tensor | None, Tensor | MemmapData | None, Tensor | None]:
    """The training rows and the validation rows: ``val_data`` if given, else a random ``val_fraction``.

    Returns:
        ``(train_idx, train_x, train_c, val_x, val_c)``: the indices of the training rows in
        ``data``, their rows and contexts, and the validation rows and contexts (``None`` if none).
    """
    lazy = isinstance(data, MemmapData)
    if val_data is not None:
        train_idx, val_idx = torch.arange(data.shape[0]), None
        val_x = (
            val_data.checked(flow.event_shape, "val_data")
            if isinstance(val_data, MemmapData)
            else as_data(val_data, flow.event_shape, "val_data")
        )
        val_c = None if val_context is None else as_data(val_context, (flow.context_features,), "val_context")
    else:
        train_idx, val_idx = split(data.shape[0], val_fraction, torch.Generator().manual_seed(seed))
        val_x = None if val_idx is None else (data.subset(val_idx) if lazy else data[val_idx])
        val_c = None if (val_idx is None or context is None) else context[val_idx]
    train_x = data.subset(train_idx) if lazy else data[train_idx]
    train_c = None if context is None else context[train_idx]
    return train_idx, train_x, train_c, val_x, val_c


def attach_standardizer(flow: Flow, data: Tensor | MemmapData, history: History) -> None:
    """Append a :class:`~flowforge.transforms.Standardize` fitted on ``data`` at the flow's data end.

    A flow that already ends in one keeps it (it was trained in that space). Constant features
    keep scale 1 and are reported as a ``constant_features`` event and a warning.
    """
    last = flow.transform.transforms[-1] if len(flow.transform) else None
    if isinstance(last, Standardize):
        return  # trained before in that space: keep its values
    std = Standardize(flow.event_shape)
    constant = data.scan().fit(std) if isinstance(data, MemmapData) else std.fit_to(data)
    if constant:
        message = (
            f"feature(s) {constant} are constant in the training data: they are left unscaled, and the "
            "likelihood is unbounded there (drop such columns)"
        )
        history.event(0, "constant_features", message)
        log.warning(message)
    flow.transform = Compose(flow.transform, std)
