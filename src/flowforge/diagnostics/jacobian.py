"""Numerical health of a flow at given points: Jacobian conditioning, round trip, log-det.

A trained flow can be invertible in theory and useless in floating point: a Jacobian with
singular values spanning many orders of magnitude loses precision in the inverse (the round
trip drifts) and in the log-det. These functions measure it on the base-side points ``z``
(usually draws of the base distribution), in the generative direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..checks import check_transform
from ..flow import Flow
from ..transforms.base import Transform

__all__ = ["JacobianReport", "jacobian_report", "jacobian_singular_values", "roundtrip_error"]


def _transform(model: Flow | Transform) -> Transform:
    if isinstance(model, Flow):
        return model.transform
    if isinstance(model, Transform):
        return model
    raise TypeError(f"expected a Flow or a Transform; got {type(model).__name__}")


def _jacobians(t: Transform, z: Tensor, context: Tensor | None) -> Tensor:
    event = z.shape[z.dim() - t.event_dim :] if t.event_dim else torch.Size()
    flat = z.detach().reshape(-1, *event)
    ctx = None if context is None else context.reshape(-1, context.shape[-1])
    out = []
    for i in range(flat.shape[0]):
        ci = None if ctx is None else ctx[i]

        def f(v: Tensor, ci: Tensor | None = ci) -> Tensor:
            return t(v.reshape(event), ci)[0].reshape(-1)

        out.append(torch.autograd.functional.jacobian(f, flat[i].reshape(-1)))
    return torch.stack(out)


def jacobian_singular_values(model: Flow | Transform, z: Tensor, *, context: Tensor | None = None) -> Tensor:
    """Singular values of the forward Jacobian ``dT/dz`` at each point, largest first.

    Args:
        model: a flow (its transform is used) or a transform.
        z: base-side points ``(n, *event)``.
        context: ``(n, c)`` for conditional flows.

    Returns:
        ``(n, D)`` with ``D`` the number of event elements.

    Cost: ``n`` autograd Jacobians (``D`` backward passes each) and SVDs: for diagnostics on a
    few hundred points, not for training.

    Examples:
        >>> import torch
        >>> from flowforge import transforms as T
        >>> t = T.Diagonal(3)
        >>> with torch.no_grad(): _ = t.params[:, 1].copy_(torch.tensor([0.0, 1.0, -1.0]))  # log-scales
        >>> jacobian_singular_values(t, torch.zeros(2, 3))[0]
        tensor([2.7183, 1.0000, 0.3679])
    """
    t = _transform(model)
    was = t.training
    t.eval()
    try:
        jac = _jacobians(t, z, context)
    finally:
        t.train(was)
    return torch.linalg.svdvals(jac)


@torch.no_grad()
def roundtrip_error(model: Flow | Transform, z: Tensor, *, context: Tensor | None = None) -> Tensor:
    """``max |T^{-1}(T(z)) - z| / (1 + max |z|)`` per point (shape: the batch shape of ``z``)."""
    t = _transform(model)
    y, _ = t(z, context)
    z2, _ = t.inverse(y, context)
    dims = tuple(range(z.dim() - t.event_dim, z.dim()))
    if not dims:
        return (z2 - z).abs() / (1 + z.abs())
    return (z2 - z).abs().amax(dims) / (1 + z.abs().amax(dims))


@dataclass
class JacobianReport:
    """Conditioning and self-consistency of a flow at a set of points.

    Attributes:
        condition: per point, the condition number ``s_max / s_min`` of the forward Jacobian.
        log10_condition_max: ``log10`` of the largest condition number.
        smallest_singular_value, largest_singular_value: over all points.
        roundtrip_error: the largest relative round-trip error (from :func:`flowforge.check_transform`).
        ladj_error: the largest error of the layer's log-det against autograd.
        check_passed: whether :func:`flowforge.check_transform` passed at its tolerances.
        problems: its failure messages.
    """

    condition: Tensor
    log10_condition_max: float
    smallest_singular_value: float
    largest_singular_value: float
    roundtrip_error: float
    ladj_error: float
    check_passed: bool
    problems: list = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "condition"}
        out["condition_median"] = float(self.condition.median())
        return out


def jacobian_report(
    model: Flow | Transform, z: Tensor, *, context: Tensor | None = None, roundtrip_tol: float | None = None
) -> JacobianReport:
    """Jacobian singular values and condition numbers, round-trip error and log-det check at ``z``.

    The round trip and log-det come from :func:`flowforge.check_transform` (the generic checks of
    SPEC.md, at their tolerances: run in float64 for meaningful numbers).

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2)]).double()
        >>> r = jacobian_report(flow, torch.randn(8, 2, dtype=torch.float64))
        >>> r.check_passed, r.log10_condition_max < 1
        (True, True)
    """
    sv = jacobian_singular_values(model, z, context=context)
    cond = sv[:, 0] / sv[:, -1]
    kwargs = {} if roundtrip_tol is None else {"roundtrip_tol": roundtrip_tol}
    check = check_transform(_transform(model), z, context, jacobian_samples=min(len(z), 16), **kwargs)
    return JacobianReport(
        condition=cond,
        log10_condition_max=float(torch.log10(cond.max())),
        smallest_singular_value=float(sv[:, -1].min()),
        largest_singular_value=float(sv[:, 0].max()),
        roundtrip_error=check.roundtrip_error,
        ladj_error=check.ladj_error,
        check_passed=check.passed,
        problems=list(check.problems),
    )
