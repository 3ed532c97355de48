"""Per-layer numerical health of a flow at given points: round trip and log-det consistency.

A flow can be correct as a whole on paper and still lose precision in one layer: a spline
pushed to its tails, an iterative inverse that stops early, a saturated ``tanh``. The whole-flow
checks (:func:`flowforge.train.diagnose.check_flow`) say *that* something drifts;
:func:`layer_health` says *where*. It walks the points through the flow layer by layer, in the
normalizing direction for data points (``space="data"``) or the generative one for base points
(``space="base"``), and at every layer measures:

- the relative round-trip error ``|t(t^{-1}(y)) - y| / (1 + |y|)`` (max over the event, per point);
- the log-det consistency ``|ladj_inverse + ladj_forward|`` at the same pair of points;
- optionally, at the first ``jacobians`` points, the error of the layer's log-det against
  ``log|det|`` of its autograd Jacobian;
- how many points left the layer with NaN or inf (they are not passed on to the next layer).

Everything runs on a float64 copy of the flow, so the float32 weights being checked are untouched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..flow import Flow

__all__ = ["HealthReport", "LayerHealth", "layer_health"]


@dataclass
class LayerHealth:
    """The measurements of one layer (see :func:`layer_health`).

    Attributes:
        index: position in ``flow.transform`` (0 acts first in the generative direction).
        layer: the class name.
        points: points that reached this layer with finite values.
        nonfinite: of those, how many left it with NaN or inf.
        roundtrip_error: largest relative round-trip error (``nan`` without finite points).
        logdet_consistency: largest ``|ladj_inverse + ladj_forward|``.
        logdet_vs_autograd: largest error against the autograd Jacobian, ``None`` if not measured.
        problems: what exceeded its tolerance.
    """

    index: int
    layer: str
    points: int
    nonfinite: int
    roundtrip_error: float
    logdet_consistency: float
    logdet_vs_autograd: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class HealthReport:
    """Per-layer health of a flow; ``bool(report)`` is ``report.passed``.

    Attributes:
        space: ``"data"`` or ``"base"``, where the given points live.
        layers: one :class:`LayerHealth` per layer, in the flow's order.
        roundtrip_tol: the round-trip tolerance used (per layer, the largest of 1e-6 and
            100 times an iterative layer's ``tol``).
        logdet_tol: the relative log-det tolerance (scaled by ``1 + |ladj|``).
    """

    space: str
    layers: list[LayerHealth]
    roundtrip_tol: float
    logdet_tol: float

    @property
    def problems(self) -> list[str]:
        return [f"layer {h.index} ({h.layer}): {p}" for h in self.layers for p in h.problems]

    @property
    def passed(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.passed

    def worst(self) -> LayerHealth | None:
        """The layer with the largest round-trip error (``None`` for a flow without layers)."""
        finite = [h for h in self.layers if not math.isnan(h.roundtrip_error)]
        return max(finite, key=lambda h: h.roundtrip_error, default=None)

    def as_dict(self) -> dict:
        """JSON-ready data (NaN becomes ``None``)."""

        def clean(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else v

        return {
            "space": self.space,
            "passed": self.passed,
            "problems": self.problems,
            "logdet_tol": self.logdet_tol,
            "layers": [
                {
                    "index": h.index,
                    "layer": h.layer,
                    "points": h.points,
                    "nonfinite": h.nonfinite,
                    "roundtrip_error": clean(h.roundtrip_error),
                    "logdet_consistency": clean(h.logdet_consistency),
                    "logdet_vs_autograd": clean(h.logdet_vs_autograd),
                    "passed": h.passed,
                }
                for h in self.layers
            ],
        }

    def __str__(self) -> str:
        head = (
            f"{'#':>3}  {'layer':<28}{'points':>7}{'non-fin':>8}"
            f"{'round trip':>12}{'ladj sum':>11}{'vs autograd':>13}"
        )
        rows = [head]
        for h in self.layers:
            auto = "-" if h.logdet_vs_autograd is None else f"{h.logdet_vs_autograd:.2e}"
            rows.append(
                f"{h.index:>3}  {h.layer[:27]:<28}{h.points:>7}{h.nonfinite:>8}"
                f"{h.roundtrip_error:>12.2e}{h.logdet_consistency:>11.2e}{auto:>13}"
                + ("" if h.passed else "  FAILED")
            )
        return "\n".join(rows)


def _per_point_max(v: Tensor, event_dim: int) -> Tensor:
    batch = v.shape[: v.dim() - event_dim]
    return v.reshape(*batch, -1).amax(-1) if event_dim else v


def _autograd_errors(t, pts: Tensor, ladj: Tensor, inverse: bool, context: Tensor | None) -> Tensor:
    event = pts.shape[1:]
    out = []
    for i in range(pts.shape[0]):
        ci = None if context is None else context[i]

        def f(v: Tensor, ci: Tensor | None = ci) -> Tensor:
            fn = t.inverse if inverse else t
            return fn(v.reshape(event), ci)[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, pts[i].reshape(-1))
        if jac.shape[0] != jac.shape[1]:  # a shape-changing layer (squeeze) keeps its element count
            return torch.full((0,), math.nan, dtype=pts.dtype)
        out.append((torch.linalg.slogdet(jac)[1] - ladj[i]).abs())
    return torch.stack(out) if out else pts.new_zeros(0)


def layer_health(
    flow: Flow,
    points: Tensor,
    *,
    context: Tensor | None = None,
    space: str = "data",
    jacobians: int = 0,
    max_features: int = 256,
    logdet_tol: float = 1e-6,
) -> HealthReport:
    """Round-trip error and log-det consistency of every layer of ``flow`` at ``points``.

    Args:
        flow: the flow (a float64 copy in eval mode is measured; ``flow`` itself is unchanged).
        points: ``(n, *event)`` points in data space (``space="data"``: walked through the
            inverses, last layer first) or in base space (``space="base"``: through the forwards).
        context: ``(n, c)`` for conditional flows.
        space: ``"data"`` or ``"base"``.
        jacobians: how many points also get each layer's autograd Jacobian (0: none). Skipped for
            layers whose event has more than ``max_features`` elements.
        max_features: see ``jacobians``.
        logdet_tol: tolerance of the log-det checks, relative to ``1 + |ladj|``.

    Returns:
        A :class:`HealthReport` with one entry per layer; points that become non-finite in a
        layer are counted there and dropped from the layers after it.

    Raises:
        ValueError: ``space`` is not ``"data"`` or ``"base"``, or ``points`` has no batch dimension.

    Cost: two passes through every layer (plus ``jacobians`` autograd Jacobians per layer).

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.Tanh()])
        >>> report = layer_health(flow, flow.sample((50,)), jacobians=3)
        >>> report.passed, [h.layer for h in report.layers]
        (True, ['LULinear', 'Tanh'])
    """
    if space not in ("data", "base"):
        raise ValueError(f"space must be 'data' or 'base'; got {space!r}")
    if not isinstance(flow, Flow):
        raise TypeError(f"layer_health checks a flowforge.Flow; got {type(flow).__name__}")
    f = copy.deepcopy(flow).double().eval()
    layers = list(f.transform.transforms)
    y = points.detach().to(torch.float64).cpu()
    if y.dim() < 1:
        raise ValueError(f"points must have a batch dimension, shape (n, *event); got {tuple(y.shape)}")
    ctx = None if context is None else context.detach().to(torch.float64).cpu()
    order = list(reversed(range(len(layers)))) if space == "data" else list(range(len(layers)))
    results: dict[int, LayerHealth] = {}
    with torch.no_grad():
        for i in order:
            t = layers[i]
            go, back = (t.inverse, t) if space == "data" else (t, t.inverse)
            n = y.shape[0]
            out, ladj_go = go(y, ctx)
            again, ladj_back = back(out, ctx)
            finite = torch.isfinite(_per_point_max(out, t.event_dim)) & torch.isfinite(ladj_go)
            rt = _per_point_max((again - y).abs(), t.event_dim) / (1 + _per_point_max(y.abs(), t.event_dim))
            consistency = (ladj_go + ladj_back).abs()
            rt, consistency, scale = rt[finite], consistency[finite], ladj_go[finite].abs()
            iterative_tol = 100 * float(getattr(t, "tol", 0.0)) if t.iterative else 0.0
            rt_tol = max(1e-6, iterative_tol)
            h = LayerHealth(
                index=i,
                layer=type(t).__name__,
                points=n,
                nonfinite=int((~finite).sum()),
                roundtrip_error=float(rt.max()) if rt.numel() else math.nan,
                logdet_consistency=float(consistency.max()) if consistency.numel() else math.nan,
            )
            if rt.numel() and not float(rt.max()) <= rt_tol:
                h.problems.append(f"round trip error {h.roundtrip_error:.3e} > {rt_tol:.0e}")
            limit = logdet_tol * (1 + float(scale.max())) if scale.numel() else logdet_tol
            if consistency.numel() and not h.logdet_consistency <= limit:
                h.problems.append(f"inverse + forward log-det = {h.logdet_consistency:.3e} > {limit:.0e}")
            if h.nonfinite:
                h.problems.append(f"{h.nonfinite} of {n} point(s) became NaN or inf")
            if jacobians > 0 and math.prod(y.shape[1:]) <= max_features and bool(finite.any()):
                k = min(jacobians, int(finite.sum()))
                sel = torch.nonzero(finite).reshape(-1)[:k]
                with torch.enable_grad():
                    errors = _autograd_errors(
                        t, y[sel], ladj_go[sel], space == "data", None if ctx is None else ctx[sel]
                    )
                if errors.numel():
                    h.logdet_vs_autograd = float(errors.max())
                    if not h.logdet_vs_autograd <= limit:
                        h.problems.append(f"log-det differs from autograd by {h.logdet_vs_autograd:.3e}")
            results[i] = h
            y = out[finite]
            ctx = None if ctx is None else ctx[finite]
    return HealthReport(
        space=space,
        layers=[results[i] for i in range(len(layers))],
        roundtrip_tol=1e-6,
        logdet_tol=logdet_tol,
    )
