"""Data-parallel training with ``torch.distributed``: process group, backend and rank-aware helpers.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``), :func:`setup` joins the process group; :func:`~flowforge.fit` and
:func:`~flowforge.fit_vi` call it themselves, so the same script or command runs on one process
or many. Gradients are all-reduced by :class:`~torch.nn.parallel.DistributedDataParallel`; the
few other collectives (the step's loss and stop flag, validation sums, RNG states for
checkpoints) are ``torch.distributed`` calls too.

The backend is NCCL when the processes train on CUDA devices and gloo otherwise; the
environment variable ``FLOWFORGE_DIST_BACKEND`` overrides the choice. Without ``torchrun``
(no ``WORLD_SIZE`` above 1 and no process group) everything here is a no-op and training
runs exactly as in a single process.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import inspect
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["World", "env_rank", "reduce_vi_stats", "replicate", "resolve_device", "setup"]

log = logging.getLogger("flowforge.train")

BACKEND_VARIABLE = "FLOWFORGE_DIST_BACKEND"

if dist.is_available():
    # torch.distributed.nn binds ``group.WORLD`` as a default argument when first imported (torch
    # 2.13; torch._dynamo imports it lazily, from DDP or the first optimizer step). Imported after
    # the group exists, it holds the group forever: destroy_process_group then leaves the gloo
    # threads running into interpreter exit, where they abort the process now and then ("terminate
    # called without an active exception", exit code -6, after a run that finished). Imported
    # here, before setup() or a user's own init_process_group, it binds None. A build where it
    # cannot be imported has nothing to leak; flowforge must import there all the same.
    try:
        importlib.import_module("torch.distributed.nn")
    except ImportError as e:  # pragma: no cover - not on the supported builds
        log.debug("torch.distributed.nn not importable: %s", e)


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel run (``size == 1``: a single process).

    Examples:
        >>> w = World(); w.active, w.main, w.shard(10)
        (False, True, slice(0, 10, None))
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True when several processes train together."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """True on rank 0, the only process that writes checkpoints, reports and figures."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (sizes differ by at most one).

        Examples:
            >>> [World(rank=r, size=3).shard(8) for r in range(3)]
            [slice(0, 2, None), slice(2, 5, None), slice(5, 8, None)]
        """
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over ranks (a copy; float64 on the collective's device)."""
        if not self.active:
            return values
        out = values.detach().to(device=self.device, dtype=torch.float64).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.cpu()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); ``None`` on the other ranks."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.size if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    @property
    def device(self) -> torch.device:
        """The device of the collectives' tensors (NCCL needs them on this rank's GPU)."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def env_rank() -> int:
    """The global rank ``torchrun`` gave this process (0 outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0"))


def _env_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(device: str | torch.device | None) -> str | torch.device | None:
    """The device of this rank: under ``torchrun`` with CUDA, ``cuda:LOCAL_RANK`` unless another is given.

    ``device="cuda"`` (no index) also means this rank's GPU; an explicit ``"cpu"`` stays on the CPU.
    """
    if _env_size() <= 1 and not (dist.is_available() and dist.is_initialized()):
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if (device is None and torch.cuda.is_available()) or str(device) == "cuda":
        return torch.device("cuda", local)
    return device


def setup(device: str | torch.device | None = None) -> World:
    """Join (or reuse) the process group ``torchrun`` describes; a single-process :class:`World` otherwise.

    The backend is ``FLOWFORGE_DIST_BACKEND`` if set, else NCCL when ``device`` is a CUDA device
    and gloo when it is not. A process group created here is destroyed when the process exits.

    Raises:
        RuntimeError: ``WORLD_SIZE`` says several processes but ``torch.distributed`` is not built in,
            or NCCL was asked for without CUDA.
    """
    if dist.is_available() and dist.is_initialized():
        backend = str(dist.get_backend())
        return World(
            rank=dist.get_rank(),
            size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            backend=backend,
        )
    if _env_size() <= 1:
        return World()
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={_env_size()} asks for a distributed run, but this PyTorch build has no "
            "torch.distributed; install a build with it or run a single process"
        )
    cuda = device is not None and torch.device(device).type == "cuda"
    backend = os.environ.get(BACKEND_VARIABLE) or ("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"the NCCL backend needs CUDA GPUs and none is visible; set {BACKEND_VARIABLE}=gloo "
                "to train on CPUs"
            )
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    atexit.register(_destroy)
    world = World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local, backend=backend)
    log.info("joined a %s process group as rank %d of %d", backend, world.rank, world.size)
    return world


def _destroy() -> None:
    if not dist.is_initialized():
        return
    if "torch._dynamo" in sys.modules:
        # Compiled steps (compile=True) keep the DDP module, hence the process group, in dynamo's
        # caches: dropped first, or the group's gloo threads outlive destroy_process_group.
        sys.modules["torch._dynamo"].reset()
        gc.collect()
    dist.destroy_process_group()


class _Call(nn.Module):
    # DDP hooks gradient reduction into the module's forward; the engines' losses are functions
    # of the flow (log_prob, rsample_and_log_prob), so the forward runs such a function.
    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.flow, *args, **kwargs)


def replicate(flow: nn.Module, world: World) -> Callable[..., Any]:
    """A caller ``call(fn, *args, **kwargs) -> fn(flow, *args, **kwargs)`` whose backward all-reduces.

    Single process: a plain call. Several: the call runs inside the forward of a
    :class:`~torch.nn.parallel.DistributedDataParallel` module, which first broadcasts rank 0's
    parameters and buffers, and then averages gradients over ranks during ``backward``.
    Buffers are not broadcast at every step (the flows' buffers are fixed once built).
    """
    if not world.active:
        return lambda fn, *args, **kwargs: fn(flow, *args, **kwargs)
    device = next(flow.parameters()).device
    ddp = nn.parallel.DistributedDataParallel
    # Newer torch renamed broadcast_buffers (and warns about the old name); both sync at start.
    names = inspect.signature(ddp.__init__).parameters
    no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers": False}
    return ddp(_Call(flow), device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def reduce_vi_stats(world: World, stats: dict, draws: int) -> dict:
    """The ELBO statistics of one VI step over all ranks, from each rank's :func:`~flowforge.train.vi_loss`.

    ``draws`` is this rank's number of target evaluations (samples times ``iw``). The ELBO is
    the mean of ``log p - log q`` over every rank's finite draws, ``elbo_se`` its standard error,
    ``nonfinite`` the total count and ``iw_bound`` the mean of the ranks' bounds.

    Examples:
        >>> reduce_vi_stats(World(), {"elbo": 1.0, "elbo_se": 0.1, "nonfinite": 0}, 8)["elbo"]
        1.0
    """
    if not world.active:
        return stats
    n = draws - int(stats["nonfinite"])
    mean = stats["elbo"] if n else 0.0
    # The unbiased variance times (n - 1), recovered from the standard error se = std / sqrt(n).
    m2 = stats["elbo_se"] ** 2 * n * (n - 1) if n > 1 else 0.0
    bound = stats.get("iw_bound", 0.0)
    values = [n, n * mean, m2, n * mean * mean, stats["nonfinite"], bound, float(bound == bound)]
    parts = torch.tensor(values, dtype=torch.float64)
    total_n, total, m2_sum, squares, bad, bounds, finite = world.sum(parts).tolist()
    out = dict(stats, nonfinite=int(bad))
    out["elbo"] = total / total_n if total_n else math.nan
    if total_n > 1:
        spread = m2_sum + squares - total_n * out["elbo"] ** 2
        out["elbo_se"] = math.sqrt(max(spread, 0.0) / (total_n - 1) / total_n)
    else:
        out["elbo_se"] = math.nan
    if "iw_bound" in stats:
        out["iw_bound"] = bounds / world.size if finite == world.size else math.nan
    return out
