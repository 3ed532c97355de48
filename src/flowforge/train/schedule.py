"""The learning-rate schedule and where training runs (device and dtype)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SCHEDULES", "Schedule", "resolve_placement"]

SCHEDULES = ("cosine", "linear", "constant")


class Schedule:
    """Learning rate at each step: ``lr * scale * warmup(step) * decay(step)``.

    ``decay`` is ``(1 + cos(pi t / T)) / 2`` for ``"cosine"``, ``1 - t / T`` for ``"linear"``
    and 1 for ``"constant"``; ``warmup`` rises linearly over the first ``warmup`` steps.
    ``scale`` starts at 1 and halves at every rollback.

    Examples:
        >>> s = Schedule("cosine", lr=1.0, total=100)
        >>> s.lr_at(0), s.lr_at(50), round(s.lr_at(100), 12)
        (1.0, 0.5, 0.0)
    """

    def __init__(self, kind: str, *, lr: float, total: int, warmup: int = 0) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}; got {kind!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number; got {lr}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0; got {warmup}")
        self.kind, self.lr, self.total, self.warmup = kind, float(lr), max(int(total), 1), int(warmup)
        self.scale = 1.0

    def lr_at(self, step: int) -> float:
        t = min(step, self.total) / self.total
        decay = {"cosine": 0.5 * (1 + math.cos(math.pi * t)), "linear": 1 - t, "constant": 1.0}[self.kind]
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        return self.lr * self.scale * warm * decay

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])


def resolve_placement(
    flow: nn.Module, device: str | torch.device | None, dtype: torch.dtype | str | None
) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype to train on (defaults: where the flow's tensors are)."""
    tensors = [*flow.parameters(), *flow.buffers()]
    floating = [t for t in tensors if t.is_floating_point()]
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device")
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)}; got {dtype!r}")
        dtype = names[dtype]
    if dtype is None:
        dtype = floating[0].dtype if floating else torch.get_default_dtype()
    return device, dtype
