"""``fit(..., compile=True)`` and ``fit_vi(..., compile=True)``: the training step through ``torch.compile``.

At the sizes of most flows a training step is hundreds of small eager operations, each with a
fixed dispatch (CPU) or launch (GPU) cost larger than its arithmetic. ``torch.compile`` fuses
the elementwise work of the transformers and log-determinants into few kernels; on CUDA the
``"reduce-overhead"`` mode also replays the whole step as a CUDA graph. Results equal the
eager ones to float rounding (tested in the suite on CPU).
"""

from __future__ import annotations

import logging
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..settings import validation

__all__ = ["compiled_loss"]

log = logging.getLogger("flowforge.train")


def compiled_loss(
    loss: Callable[[Tensor, Tensor | None], Tensor], *, device: torch.device, distributed: bool = False
) -> _CompiledLoss:
    """``loss(x, context)`` compiled for repeated calls on batches of one shape.

    The first call runs eagerly, with argument validation, so that shape errors keep their
    messages and data-dependent initialisations (``ActNorm``) happen outside the graph. Later
    calls run the compiled graph with validation off (the batch shape no longer changes). If
    compilation fails (no C++ compiler for the CPU backend, an operation the compiler does not
    support), a warning names the error and training continues eagerly: nothing is lost.

    Args:
        loss: the step's loss as a function of the batch and its context (``None`` if none).
        device: where training runs; CUDA uses ``mode="reduce-overhead"`` (CUDA graphs), other
            devices the default mode. Shapes are static (``dynamic=False``): ``fit`` draws
            batches of one size.
        distributed: the step runs in a data-parallel group (DDP's gradient hooks fire during
            its backward). The default mode then on every device: CUDA graphs around DDP's
            collectives are not tested here; on CPUs (gloo) the compiled steps of 2 processes
            equal the eager ones (``tests/test_distributed.py``).

    Returns:
        A function with ``loss``'s signature and results (``fit_vi(compile=True)`` compiles the
        flow's generative pass with it, which returns ``(x, ladj)``). Its ``state`` attribute is
        ``"eager"`` before the first compiled call, then ``"compiled"``, or ``"failed"`` after a
        fallback.

    Cost:
        The first compiled call traces and compiles the step (seconds to minutes, growing with the
        number of layers); later calls skip Python dispatch for the compiled region.

    Examples:
        >>> import torch
        >>> f = compiled_loss(lambda x, c: (x**2).mean(), device=torch.device("cpu"))
        >>> float(f(torch.ones(3), None)), f.state
        (1.0, 'eager')
    """
    return _CompiledLoss(loss, device, distributed)


def own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` behind a wrapper whose code object is its own.

    Dynamo keeps compiled graphs, and its limit of 8 recompilations, per code object, and every
    ``fit`` builds its loss from the same closure: without this, the ninth architecture trained
    with ``compile=True`` in one process would run eagerly behind a torch warning while
    ``fit`` reported it compiled. (``bench/speed.py`` wraps the peers' losses with it too.)
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    code = call.__code__.replace()  # a new code object, hence a cache of its own
    return types.FunctionType(code, call.__globals__, call.__name__, call.__defaults__, call.__closure__)


class _CompiledLoss:
    def __init__(
        self, loss: Callable[[Tensor, Tensor | None], Tensor], device: torch.device, distributed: bool
    ) -> None:
        self.loss, self.state, self._warm = loss, "eager", False
        self.mode = "reduce-overhead" if device.type == "cuda" and not distributed else None
        self.compiled = torch.compile(own_code(loss), mode=self.mode, dynamic=False)

    def __call__(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.state == "compiled":
            with validation(False):
                return self.compiled(x, context)
        if self.state == "failed" or not self._warm:
            self._warm = True
            return self.loss(x, context)
        try:
            with validation(False):
                out = self.compiled(x, context)
        except Exception as e:  # any compiler failure: the eager step is still correct
            self.state = "failed"
            first = str(e).splitlines()[0][:300] if str(e) else ""
            warnings.warn(
                f"compile=True: torch.compile failed ({type(e).__name__}: {first}); "
                "training continues eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.loss(x, context)
        self.state = "compiled"
        log.info("compile=True: the training step is compiled (mode %s)", self.mode or "default")
        return out
