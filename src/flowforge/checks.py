"""The generic checks every transform must pass (SPEC.md), public for users' own layers.

:func:`check_transform` runs a transform forward and back on given points and measures:
the round-trip error ``inverse(forward(x)) - x``; the error of the forward ``ladj``
against ``log|det|`` of the autograd Jacobian; the consistency of the inverse ``ladj``
with minus the forward one; and whether gradients with respect to inputs and parameters
are finite. Run it in float64 for meaningful tolerances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .transforms.base import Transform

__all__ = ["CheckReport", "check_transform"]


@dataclass
class CheckReport:
    """What :func:`check_transform` measured, and whether it is within tolerance.

    Attributes:
        name: the transform's class name.
        roundtrip_error: max |inverse(forward(x)) - x| / (1 + max|x|).
        ladj_error: max |forward ladj - log|det J_autograd||.
        inverse_ladj_error: max |inverse ladj + forward ladj|.
        grads_finite: every gradient (inputs and parameters) finite.
        shapes_ok: ``ladj`` has the batch shape in both directions and the round trip
            restores the input shape.
        problems: human-readable list of failures (empty when passed).
    """

    name: str
    roundtrip_error: float
    ladj_error: float
    inverse_ladj_error: float
    grads_finite: bool
    shapes_ok: bool
    tolerances: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED: " + "; ".join(self.problems)
        return (
            f"check_transform({self.name}): {status}\n"
            f"  round trip error     {self.roundtrip_error:.3e}  (tol {self.tolerances['roundtrip']:.0e})\n"
            f"  log-det vs autograd  {self.ladj_error:.3e}  (tol {self.tolerances.get('ladj'):.0e})\n"
            f"  inverse + forward    {self.inverse_ladj_error:.3e}  (tol {self.tolerances.get('ladj'):.0e})\n"
            f"  finite gradients     {self.grads_finite}\n"
            f"  shapes               {'ok' if self.shapes_ok else 'wrong'}"
        )

    def raise_if_failed(self) -> None:
        """Raise ``AssertionError`` with the full report if any check failed."""
        if not self.passed:
            raise AssertionError(str(self))


def _jacobian_logdets(t: Transform, x: Tensor, context: Tensor | None, limit: int) -> Tensor:
    n_ev = t.event_dim
    batch = x.shape[: x.dim() - n_ev]
    event = x.shape[x.dim() - n_ev :]
    flat = x.reshape(-1, *event)
    ctx = None
    if context is not None:
        ctx = context.expand(*batch, context.shape[-1]).reshape(-1, context.shape[-1])
    out = []
    for i in range(min(flat.shape[0], limit)):
        ci = None if ctx is None else ctx[i]

        def f(v: Tensor, ci=ci) -> Tensor:
            return t(v.reshape(event), ci)[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, flat[i].reshape(-1).detach())
        if jac.shape[0] != jac.shape[1]:
            raise ValueError(
                f"{type(t).__name__} changes the number of elements ({jac.shape[1]} -> {jac.shape[0]})"
            )
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def check_transform(
    t: Transform,
    x: Tensor,
    context: Tensor | None = None,
    *,
    roundtrip_tol: float | None = None,
    ladj_tol: float = 1e-6,
    jacobian_samples: int = 6,
) -> CheckReport:
    """Run the generic checks of SPEC.md on transform ``t`` at the points ``x``.

    Args:
        t: the transform (put in eval mode for the checks, restored afterwards).
        x: inputs on the base side, shape ``(*batch, *event)``; use float64.
        context: the context for conditional transforms, shape ``(*batch, c)``.
        roundtrip_tol: relative round-trip tolerance; default 1e-8 for closed-form
            inverses and ``max(1e-6, 100 * t.tol)`` for iterative ones.
        ladj_tol: tolerance on the log-determinants (absolute, scaled by ``1 + |ladj|``).
        jacobian_samples: how many batch elements get an autograd Jacobian.

    Returns:
        A :class:`CheckReport`; ``bool(report)`` says whether everything passed.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> x = torch.randn(7, 5, dtype=torch.float64)
        >>> report = ff.check_transform(T.Householder(5, reflections=3), x)
        >>> report.passed
        True
    """
    if roundtrip_tol is None:
        roundtrip_tol = max(1e-6, 100 * float(getattr(t, "tol", 1e-8))) if t.iterative else 1e-8
    was_training = t.training
    t.eval()
    problems: list[str] = []
    try:
        params = [p for p in t.parameters() if p.requires_grad]
        xg = x.detach().clone().requires_grad_(True)
        y, ladj = t(xg, context)
        x2, ladj_inv = t.inverse(y, context)
        batch = x.shape[: x.dim() - t.event_dim]
        shapes_ok = tuple(ladj.shape) == tuple(batch) and tuple(ladj_inv.shape) == tuple(batch)
        shapes_ok = shapes_ok and x2.shape == x.shape
        if not shapes_ok:
            problems.append(
                f"shapes: x {tuple(x.shape)}, y {tuple(y.shape)}, ladj {tuple(ladj.shape)}, "
                f"inverse ladj {tuple(ladj_inv.shape)}, x back {tuple(x2.shape)}; batch {tuple(batch)}"
            )
        rt = ((x2 - x).abs().max() / (1 + x.abs().max())).item() if x.numel() else 0.0
        inv_err = (ladj_inv + ladj).abs().max().item() if ladj.numel() else 0.0
        scale = 1 + ladj.detach().abs().max().item() if ladj.numel() else 1.0
        jac = _jacobian_logdets(t, x.detach(), context, jacobian_samples)
        flat_ladj = ladj.detach().reshape(-1)[: jac.numel()]
        ladj_err = (jac - flat_ladj).abs().max().item() if jac.numel() else 0.0

        loss = y.sum() + ladj.sum() + x2.sum() + ladj_inv.sum()
        grads = torch.autograd.grad(loss, [xg, *params], allow_unused=True)
        grads_finite = all(g is None or bool(torch.isfinite(g).all()) for g in grads)
    finally:
        t.train(was_training)

    if not (rt <= roundtrip_tol):
        problems.append(f"round trip error {rt:.3e} > {roundtrip_tol:.0e}")
    if not (ladj_err <= ladj_tol * scale):
        problems.append(f"log-det differs from autograd by {ladj_err:.3e} > {ladj_tol * scale:.0e}")
    if not (inv_err <= ladj_tol * scale):
        problems.append(f"inverse log-det + forward log-det = {inv_err:.3e} > {ladj_tol * scale:.0e}")
    if not grads_finite:
        problems.append("non-finite gradients")
    if any(math.isnan(v) for v in (rt, ladj_err, inv_err)):
        problems.append("NaN in a measured error")
    return CheckReport(
        name=type(t).__name__,
        roundtrip_error=rt,
        ladj_error=ladj_err,
        inverse_ladj_error=inv_err,
        grads_finite=grads_finite,
        shapes_ok=shapes_ok,
        tolerances={"roundtrip": roundtrip_tol, "ladj": ladj_tol},
        problems=problems,
    )
