"""Draws from a fitted flow with their log-weights, and the ELBO with its Monte Carlo error.

Every importance diagnostic starts from the same three numbers per draw ``x_i ~ q``:
``log q(x_i)``, ``log p~(x_i)`` and the log importance ratio ``log w_i = log p~(x_i) - log q(x_i)``.
:func:`draw` computes them once (no gradients, one generative pass, no inverse).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ..flow import Flow
from ..train.elbo import call_target

__all__ = ["ElboEstimate", "VIDraws", "draw", "elbo", "in_dtype", "seeded"]


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` without disturbing the global RNG (``None``: as is)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def in_dtype(flow: Flow, dtype: torch.dtype | None = torch.float64) -> Flow:
    """``flow`` itself if it already computes in ``dtype`` (or ``dtype`` is None), else a converted copy.

    The diagnostics evaluate flows in float64 by default: float32 rounding in ``log q`` adds
    outliers to the log-weights that PSIS reads as a heavy tail. An IAF fitted to the
    non-centred eight schools gives k-hat 0.44 evaluated in float32 and 0.28 in float64, with
    the same draws' importance ESS of 99.5% either way.
    """
    if dtype is None:
        return flow
    tensor = next(flow.parameters(), None)
    if tensor is None:
        tensor = next(flow.buffers(), None)
    if tensor is not None and tensor.dtype == dtype:
        return flow
    return copy.deepcopy(flow).to(dtype)


@dataclass
class VIDraws:
    """Draws ``x ~ q`` with ``log q(x)`` and ``log p~(x)`` (float64, ``-inf`` where ``p~`` is 0 or NaN).

    Attributes:
        x: the draws, shape ``(n, *event)``, detached.
        log_q: shape ``(n,)``.
        log_p: shape ``(n,)``.
    """

    x: Tensor
    log_q: Tensor
    log_p: Tensor

    @property
    def n(self) -> int:
        return int(self.log_q.shape[0])

    @property
    def log_w(self) -> Tensor:
        """Log importance ratios ``log p~(x) - log q(x)`` (``-inf`` where ``p~`` is zero)."""
        return self.log_p - self.log_q

    @property
    def nonfinite(self) -> int:
        """How many draws had a target value of NaN or -inf (zero density)."""
        return int((~torch.isfinite(self.log_p)).sum())


@torch.no_grad()
def draw(
    flow: Flow,
    target: Callable[[Tensor], Tensor],
    n: int = 4096,
    *,
    chunk: int = 8192,
    seed: int | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> VIDraws:
    """``n`` draws from ``flow`` with their log-densities under the flow and the target.

    Args:
        flow: the fitted flow ``q`` (unconditional).
        target: ``p~``: a :class:`~flowforge.targets.Target` or a batched log-density function.
        n: number of draws.
        chunk: draws per generative pass (memory).
        seed: seeds the draws without touching the global RNG; ``None`` uses it.
        dtype: evaluate a copy of the flow in this dtype (default float64, see :func:`in_dtype`);
            ``None`` uses the flow as it is.

    Cost: ``ceil(n / chunk)`` generative passes and target calls.
    """
    if n < 1:
        raise ValueError(f"n must be positive; got {n}")
    flow = in_dtype(flow, dtype)
    event_dim = len(flow.event_shape)
    xs, lqs, lps = [], [], []
    with seeded(seed):
        for start in range(0, n, chunk):
            x, log_q = flow.rsample_and_log_prob((min(chunk, n - start),))
            log_p = call_target(target, x, event_dim).double()
            xs.append(x.detach())
            lqs.append(log_q.detach().double())
            lps.append(torch.nan_to_num(log_p, nan=-math.inf, posinf=math.inf, neginf=-math.inf))
    return VIDraws(torch.cat(xs), torch.cat(lqs), torch.cat(lps))


@dataclass
class ElboEstimate:
    """The ELBO ``E_q[log p~ - log q]`` and what it implies.

    Attributes:
        elbo: the Monte Carlo mean over draws with a finite target value.
        se: its standard error (sd / sqrt(n)).
        n: draws used.
        nonfinite: draws where the target was NaN or -inf, excluded (with any of them the true
            ELBO is -inf: q puts mass where p has none).
        log_z: the target's exact ``log Z`` where known.
        gap: ``log_z - elbo = KL(q || p)`` where ``log_z`` is known; negative beyond a few ``se``
            means a bug (in the target's constant, the flow's log-det, or the sampler).
    """

    elbo: float
    se: float
    n: int
    nonfinite: int = 0
    log_z: float | None = None

    @property
    def gap(self) -> float | None:
        return None if self.log_z is None else self.log_z - self.elbo

    def __str__(self) -> str:
        s = f"ELBO {self.elbo:.4f} ± {self.se:.4f} (n={self.n})"
        if self.log_z is not None:
            s += f"; log Z {self.log_z:.4f}, KL(q||p) = {self.gap:.4f}"
        if self.nonfinite:
            s += f"; {self.nonfinite} draws with zero target density excluded"
        return s


def elbo(
    flow: Flow | VIDraws,
    target: Callable[[Tensor], Tensor] | None = None,
    *,
    samples: int = 4096,
    seed: int | None = 0,
) -> ElboEstimate:
    """The ELBO of a fitted flow with its Monte Carlo standard error.

    .. math::

        \\text{ELBO} = E_{x \\sim q}[\\log \\tilde p(x) - \\log q(x)] = \\log Z - KL(q \\| p)

    Args:
        flow: the flow, or :class:`VIDraws` already drawn (then ``target`` only supplies ``log_z``).
        target: the target (its ``log_z`` attribute, if any, is reported with the gap).
        samples: draws when ``flow`` is a flow.
        seed: seed of the draws (``None``: the global RNG).

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge.targets import from_callable
        >>> t = from_callable(lambda z: -0.5 * (z**2).sum(-1), 2, log_z=math.log(2 * math.pi))
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [])
        >>> est = elbo(flow, t)
        >>> round(est.gap, 6), est.se < 1e-6  # q = p exactly: the log-weights are constant
        (0.0, True)
    """
    if isinstance(flow, VIDraws):
        draws = flow
    else:
        if target is None:
            raise ValueError("elbo(flow, target): the target is needed to draw")
        draws = draw(flow, target, samples, seed=seed)
    lw = draws.log_w
    ok = torch.isfinite(lw)
    vals = lw[ok]
    m = int(vals.numel())
    mean = float(vals.mean()) if m else -math.inf
    se = float(vals.std() / math.sqrt(m)) if m > 1 else math.nan
    log_z = getattr(target, "log_z", None)
    return ElboEstimate(mean, se, m, draws.n - m, None if log_z is None else float(log_z))
