"""Where a non-finite value first appeared in a training step: layer, direction, batch rows.

When a step's loss or gradient is NaN or inf, :class:`~flowforge.train.engine.Run` rolls back.
Before it does, :func:`explain_nonfinite` replays the step's loss with the random state of
that step (so a VI step draws the same samples again) and watches every transform of the flow:
each layer's ``forward`` and ``inverse`` get a hook that checks their outputs, and the base
distribution's ``log_prob`` too. The first layer whose output (or log-det) holds NaN or inf
is where the value appeared; its batch rows are reported as compact index ranges. When the
loss is finite and only the gradient is not, tensor hooks on each layer's input find the
first layer in backward order whose input gradient is non-finite (else the layers whose
parameter gradients are).

The replay costs one extra forward (and backward) pass, only on the failing steps. Hooks are
instance attributes removed afterwards, so the flow is left as it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..transforms.base import Compose, Transform

__all__ = ["NonFiniteOrigin", "explain_nonfinite", "find_nonfinite", "rng_snapshot", "row_ranges"]

log = logging.getLogger("flowforge.train")


def rng_snapshot(*, cuda: bool = False) -> dict[str, Any]:
    """The global random state (CPU, and CUDA with ``cuda``), cheap enough to take every step."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def row_ranges(rows: list[int], *, limit: int = 6) -> str:
    """Sorted row indices as compact ranges.

    Examples:
        >>> row_ranges([0, 1, 2, 7, 9, 10])
        '0-2, 7, 9-10'
    """
    rows = sorted(set(rows))
    parts: list[str] = []
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1] == rows[j] + 1:
            j += 1
        parts.append(str(rows[i]) if i == j else f"{rows[i]}-{rows[j]}")
        i = j + 1
    more = f", ... ({len(parts) - limit} more ranges)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


@dataclass
class NonFiniteOrigin:
    """The first place a non-finite value appeared in a replayed step.

    Attributes:
        where: the module path inside the flow (``transform.transforms.3``) or ``base``.
        layer: its class name.
        direction: ``"forward"``, ``"inverse"``, ``"log_prob"`` (the base) or ``"backward"``.
        what: ``"output"``, ``"log-det"``, ``"input gradient"`` or ``"parameter gradient"``.
        rows: flat batch rows with the non-finite value (empty for parameter gradients).
        batch: the number of batch rows.
    """

    where: str
    layer: str
    direction: str
    what: str
    rows: list[int]
    batch: int

    @property
    def message(self) -> str:
        rows = f" at batch row(s) {row_ranges(self.rows)} of {self.batch}" if self.rows else ""
        return f"first non-finite value: {self.what} of {self.layer} ({self.where}), {self.direction}{rows}"


def _bad_rows(t: Any, event_dim: int) -> list[int]:
    """Flat batch rows of ``t`` (batch dims before the last ``event_dim``) holding NaN or inf."""
    if not isinstance(t, Tensor) or not t.is_floating_point() or not t.numel():
        return []
    rows = t.shape[: max(t.dim() - event_dim, 0)].numel()
    flat = t.detach().reshape(rows, -1)
    return torch.nonzero(~torch.isfinite(flat).all(-1)).reshape(-1).tolist()


def _leaves(flow: nn.Module) -> list[tuple[str, Transform]]:
    # Compose only adds up its members; watching it too would report the same value twice.
    return [
        (n, m) for n, m in flow.named_modules() if isinstance(m, Transform) and not isinstance(m, Compose)
    ]


@contextlib.contextmanager
def _watched(flow: nn.Module, grads: bool) -> Iterator[dict]:
    found: dict = {"first": None, "calls": [], "grad_events": []}
    patched: list[tuple[Any, str]] = []

    def wrap(name: str, module: Any, attr: str, kind: str, event_dim: int) -> None:
        original = getattr(module, attr)

        def hooked(x: Tensor, *args: Any, **kwargs: Any) -> Any:
            index = len(found["calls"])
            found["calls"].append((name, type(module).__name__, kind, event_dim))
            if grads and isinstance(x, Tensor) and x.requires_grad:
                x.register_hook(lambda g, i=index: found["grad_events"].append((i, g)))
            out = original(x, *args, **kwargs)
            if found["first"] is None:
                pieces = out if isinstance(out, tuple) else (out,)
                labels = ("output", "log-det") if kind != "log_prob" else ("log-density",)
                batch = x.shape[: x.dim() - event_dim].numel() if isinstance(x, Tensor) else 1
                for label, piece in zip(labels, pieces):
                    dims = event_dim if label == "output" else 0
                    bad = _bad_rows(piece, dims)
                    if bad:
                        found["first"] = NonFiniteOrigin(name, type(module).__name__, kind, label, bad, batch)
                        break
            return out

        setattr(module, attr, hooked)
        patched.append((module, attr))

    for name, module in _leaves(flow):
        wrap(name, module, "forward", "forward", module.event_dim)
        wrap(name, module, "inverse", "inverse", module.event_dim)
    base = getattr(flow, "base", None)
    if base is not None and hasattr(base, "log_prob"):
        wrap("base", base, "log_prob", "log_prob", len(getattr(base, "event_shape", ())))
    try:
        yield found
    finally:
        for module, attr in patched:
            with contextlib.suppress(AttributeError):
                delattr(module, attr)


def _gradient_origin(flow: nn.Module, found: dict) -> NonFiniteOrigin | None:
    # Input-gradient hooks fire in backward order: the first non-finite one was produced by the
    # backward of the layer that consumed that input.
    for index, grad in found["grad_events"]:
        name, layer, kind, event_dim = found["calls"][index]
        bad = _bad_rows(grad, event_dim)
        if bad:
            rows = grad.shape[: max(grad.dim() - event_dim, 0)].numel()
            return NonFiniteOrigin(name, layer, f"backward of {kind}", "input gradient", bad, rows)
    latest: tuple[int, str, str] | None = None
    order = {call[0]: i for i, call in enumerate(found["calls"])}
    for name, module in _leaves(flow):
        if any(p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in module.parameters()):
            i = order.get(name, -1)
            if latest is None or i > latest[0]:
                latest = (i, name, type(module).__name__)
    if latest is None:
        return None
    return NonFiniteOrigin(latest[1], latest[2], "backward", "parameter gradient", [], 0)


def find_nonfinite(
    flow: nn.Module, loss_fn: Callable[[], Tensor], *, gradients: bool = False
) -> NonFiniteOrigin | None:
    """Run ``loss_fn()`` with every layer of ``flow`` watched; the first non-finite value, if any.

    With ``gradients`` the loss is also backpropagated (parameter gradients are restored
    afterwards) to locate a non-finite gradient when every value was finite.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.Tanh()])
        >>> x = torch.tensor([[0.1, 0.2], [3.0, 0.0], [0.3, 0.4]])  # row 1 is outside tanh's range
        >>> print(find_nonfinite(flow, lambda: -flow.log_prob(x).mean()).message)
        first non-finite value: log-det of Tanh (transform.transforms.1), inverse at batch row(s) 1 of 3
    """
    saved = {p: p.grad for p in flow.parameters()}
    try:
        with _watched(flow, gradients) as found:
            loss = loss_fn()
            if found["first"] is None and gradients and loss.requires_grad and bool(torch.isfinite(loss)):
                for p in flow.parameters():
                    p.grad = None
                loss.backward()
                return _gradient_origin(flow, found)
        return found["first"]
    finally:
        for p, g in saved.items():
            p.grad = g


def explain_nonfinite(
    flow: nn.Module, loss_fn: Callable[[], Tensor], rng: dict[str, Any], *, gradients: bool
) -> str:
    """Replay a failed step from its random state ``rng`` and say where the value appeared.

    Returns a sentence to add to the rollback message (empty if the replay found nothing, e.g.
    when the non-finite value came from the target or the loss itself). The random state
    after the step is restored, so the run goes on exactly as without the replay.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # A replay on one rank would enter the data-parallel collectives alone and wait forever.
        return ""
    after = rng_snapshot(cuda="cuda" in rng)
    try:
        _restore(rng)
        # A compiled step (fit(compile=True)) replays eagerly: the hooks must see every layer,
        # and new hooks would otherwise trigger a recompilation.
        with torch.compiler.set_stance("force_eager"):
            origin = find_nonfinite(flow, loss_fn, gradients=gradients)
    except Exception as e:  # the diagnosis must never turn a rollback into a crash
        log.info("could not replay the non-finite step: %s: %s", type(e).__name__, e)
        return ""
    finally:
        _restore(after)
    if origin is None:
        return "; every layer's outputs and log-dets were finite" if not gradients else ""
    return "; " + origin.message
