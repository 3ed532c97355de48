"""Atomic training checkpoints and the random-number states they carry.

A checkpoint is one file, ``checkpoint.pt`` in the checkpoint directory, written to a
temporary file in the same directory, flushed to disk and then renamed over the old one
(``os.replace`` is atomic on POSIX and Windows): a run killed at any moment leaves either
the previous checkpoint or the new one, never a torn file (the partial temporary file it
may leave is removed by the next successful write). Its contents are tensors,
numbers, strings, lists and dicts only, read back with ``torch.load(weights_only=True)``,
so a checkpoint cannot execute code when it is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._safefiles import atomic_write
from ..errors import FlowforgeError, SpecError

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "architecture_hash",
    "check_resumable",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(FlowforgeError, RuntimeError):
    """A checkpoint could not be read, or belongs to a different run."""


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically and return the path.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp(); p = save_checkpoint(d, {"step": 3})
        >>> load_checkpoint(d)["step"]
        3
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_NAME
    # Interrupted or failed: the previous checkpoint stays untouched and the partial file goes.
    atomic_write(target, lambda f: torch.save(state, f), temp_prefix=".checkpoint-")
    # A process killed mid-write (kill -9, power loss) leaves its temporary file behind.
    for stale in directory.glob(".checkpoint-*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    return target


def load_checkpoint(directory: str | Path, *, map_location: str | torch.device = "cpu") -> dict | None:
    """The state saved in ``directory/checkpoint.pt``, or ``None`` when there is none.

    Raises:
        CheckpointError: the file exists but cannot be read as a flowforge checkpoint.
    """
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {e}. Delete it to start over."
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a flowforge checkpoint (top level is {type(state).__name__})")
    return state


def check_resumable(state: dict[str, Any], *, kind: str, fingerprint: dict[str, Any], where: Path) -> None:
    """Refuse to resume ``state`` (read from ``where``) in a run of another kind or other settings.

    ``fingerprint`` is what identifies the run now (data digest, steps, learning rate, ..., and
    the ``architecture`` hash of :func:`architecture_hash`); every entry that differs from the
    checkpoint's is named. Checkpoints written before the architecture was fingerprinted (or
    flows without a spec) resume without that entry checked.

    Raises:
        CheckpointError: not a flowforge checkpoint of ``kind``, or other settings.
    """
    if state.get("format") != "flowforge-checkpoint" or state.get("kind") != kind:
        raise CheckpointError(f"{where} is not a flowforge {kind!r} checkpoint")
    saved = state["fingerprint"]
    if "architecture" not in saved or None in (saved["architecture"], fingerprint.get("architecture")):
        saved = {**saved, "architecture": fingerprint.get("architecture")}
    diffs = [
        "the model's layers (their saved spec) differ from the checkpoint's"
        if k == "architecture"
        else f"{k}: checkpoint {saved.get(k)!r}, now {v!r}"
        for k, v in fingerprint.items()
        if saved.get(k) != v
    ]
    if diffs:
        raise CheckpointError(
            f"{where} was written by a run with other settings ({'; '.join(diffs)}); "
            "resume with the same settings, or use another checkpoint_dir"
        )


def get_rng_state(*, cuda: bool) -> dict[str, Any]:
    """The torch (CPU and, with ``cuda``, all CUDA devices), numpy and Python random states.

    Stored as tensors and lists, which ``torch.load(weights_only=True)`` accepts.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": [int(version), list(internal), gauss],
    }
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def architecture_hash(flow: nn.Module) -> str | None:
    """A hash of the flow's layer spec (``None`` for flows with unsaveable parts, e.g. custom nets).

    Two flows with the same parameter shapes can be different maps (another activation, mask
    or affine arrangement); resuming one from the other's checkpoint must be refused.
    """
    from ..registry import flow_spec  # imported late: the registry imports every layer

    try:
        text = json.dumps(flow_spec(flow), sort_keys=True)
    except (SpecError, AttributeError, TypeError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()
