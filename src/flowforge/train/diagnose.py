"""Numerical health of a whole flow at given points: what ``flowforge check`` reports."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from ..flow import Flow

__all__ = ["check_flow"]


def _summary(values: Tensor) -> dict:
    if not values.numel():
        return {"min": None, "median": None, "max": None}
    return {"min": float(values.min()), "median": float(values.median()), "max": float(values.max())}


def check_flow(flow: Flow, x: Tensor, *, jacobians: int = 32, max_features: int = 512) -> dict:
    """Round trip, log-det consistency and Jacobian conditioning of ``flow`` at data points ``x``.

    Runs on a float64 copy of the flow. At every point: ``z = T^{-1}(x)``, ``x' = T(z)``, the
    relative round-trip error ``|x' - x| / (1 + |x|)`` and ``|ladj_inverse + ladj_forward|``.
    At the first ``jacobians`` points (when the event has at most ``max_features`` elements):
    the autograd Jacobian of ``T^{-1}``, the error of the inverse log-det against its
    ``log|det|``, and its condition number (largest over smallest singular value).

    Returns:
        A JSON-ready dict with the measurements, ``passed`` and a list of ``problems``.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.Tanh()])
        >>> check_flow(flow, flow.sample((20,)), jacobians=4)["passed"]
        True
    """
    f = copy.deepcopy(flow).double().eval()
    event = tuple(f.event_shape)
    x = x.detach().double().cpu()
    with torch.no_grad():
        z, ladj_inv = f.inverse(x)
        x2, ladj_fwd = f(z)
    flat = x.reshape(len(x), -1)
    ok = torch.isfinite(z.reshape(len(z), -1)).all(-1) & torch.isfinite(ladj_inv)
    rt = ((x2 - x).reshape(len(x), -1).abs().amax(-1) / (1 + flat.abs().amax(-1)))[ok]
    consistency = (ladj_inv + ladj_fwd).abs()[ok]
    iterative = [t for t in f.transform.transforms if t.iterative]
    rt_tol = max([1e-6, *(100 * float(getattr(t, "tol", 1e-8)) for t in iterative)])
    report: dict = {
        "points": len(x),
        "points_outside_support": int((~ok).sum()),
        "roundtrip_error": _summary(rt),
        "inverse_plus_forward_logdet": _summary(consistency),
    }
    problems = []
    if rt.numel() and not float(rt.max()) <= rt_tol:
        problems.append(f"round trip error {float(rt.max()):.3e} > {rt_tol:.0e}")
    if consistency.numel() and not float(consistency.max()) <= 1e-6 * (1 + float(ladj_inv[ok].abs().max())):
        problems.append(f"inverse and forward log-dets disagree by {float(consistency.max()):.3e}")
    n_features = math.prod(event)
    idx = torch.nonzero(ok).reshape(-1)[:jacobians]
    if n_features > max_features:
        report["jacobian"] = f"skipped: {n_features} features > {max_features}"
    elif idx.numel():
        conds, errors = [], []
        for i in idx.tolist():
            jac = torch.autograd.functional.jacobian(
                lambda v: f.inverse(v.reshape(event))[0].reshape(-1), x[i].reshape(-1)
            )
            sv = torch.linalg.svdvals(jac)
            conds.append(float(sv.max() / sv.min()))
            errors.append(abs(float(torch.log(sv).sum()) - float(ladj_inv[i])))
        report["jacobian_points"] = int(idx.numel())
        report["logdet_error_vs_autograd"] = _summary(torch.tensor(errors))
        report["condition_number"] = _summary(torch.tensor(conds))
        worst = max(errors)
        if not worst <= 1e-6 * (1 + float(ladj_inv[idx].abs().max())):
            problems.append(f"log-det differs from autograd by {worst:.3e}")
    report["passed"] = not problems
    report["problems"] = problems
    return report
