"""Shared machinery of the conditioning experiments (``padding``, ``conditioning``): training with
measurements along the way, batched Jacobian singular values, a sample-based NLL.

:func:`fit_tracked` trains with :func:`flowforge.fit` in chunks and calls a measurement between
chunks (``fit`` has no callback; each chunk is one ``fit`` call at a constant learning rate, so
Adam's moment estimates restart at every chunk). :func:`singular_values` is
:func:`flowforge.diagnostics.jacobian_singular_values` for a whole batch at once: ``D`` backward
passes instead of ``n D``; the experiments check it against the library's on their last
measurement. :func:`kde_nll` scores samples of a model against test data through a Gaussian
kernel density estimate, the one yardstick that applies to every padding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from ..flow import Flow
from ..train import fit

__all__ = ["fit_tracked", "kde_nll", "singular_values"]


def singular_values(flow: Flow, x: Tensor) -> Tensor:
    """Singular values of the generative Jacobian ``dT/dz`` at ``z = T^{-1}(x)``, largest first.

    The Jacobian of the normalizing map at ``x`` is the inverse matrix, so its condition number
    is the same; the singular values are the reciprocals.

    Args:
        flow: an unconditional flow over vectors.
        x: data-side points ``(n, D)``.

    Returns:
        ``(n, D)`` singular values.

    Examples:
        >>> import torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> t = T.Diagonal(2)
        >>> with torch.no_grad(): _ = t.params[:, 1].copy_(torch.tensor([1.0, -1.0]))
        >>> singular_values(ff.Flow(ff.distributions.StandardNormal((2,)), [t]), torch.zeros(3, 2))[0]
        tensor([2.7183, 0.3679])
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (n, D) data points; got shape {tuple(x.shape)}")
    was = flow.training
    flow.eval()
    try:
        with torch.no_grad():
            z, _ = flow.inverse(x)
        z = z.detach().requires_grad_(True)
        y, _ = flow.transform(z)
        # Each sample's output depends on its own input only, so the gradient of a column sum
        # over the batch is that row of every sample's Jacobian.
        rows = [torch.autograd.grad(y[:, j].sum(), z, retain_graph=True)[0] for j in range(y.shape[1])]
    finally:
        flow.train(was)
    return torch.linalg.svdvals(torch.stack(rows, dim=1).detach())


def fit_tracked(
    flow: Flow,
    data: Tensor,
    *,
    steps: int,
    every: int,
    measure: Callable[[Flow], dict],
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 256,
    standardize: bool = True,
) -> list[dict]:
    """Fit ``flow`` to ``data`` for ``steps`` steps, calling ``measure(flow)`` every ``every`` steps.

    Returns:
        One record per measurement (step 0 included): ``measure``'s dict plus ``step``,
        ``loss`` (the mean training loss of the chunk before it; ``nan`` at step 0) and
        ``seconds`` (training time so far).
    """
    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be positive; got steps={steps}, every={every}")
    records = [{"step": 0, "loss": math.nan, "seconds": 0.0, **measure(flow)}]
    done, spent = 0, 0.0
    while done < steps:
        n = min(every, steps - done)
        start = time.perf_counter()
        history = fit(
            flow,
            data,
            steps=n,
            lr=lr,
            batch_size=batch_size,
            schedule="constant",
            val_fraction=0.0,
            restore_best=False,
            standardize=standardize,
            progress=False,
            seed=seed * 100_003 + done,  # fresh batches in every chunk
        )
        spent += time.perf_counter() - start
        done += n
        losses = [v for v in history["loss"] if math.isfinite(v)]
        loss = sum(losses) / len(losses) if losses else math.nan
        records.append({"step": done, "loss": loss, "seconds": round(spent, 2), **measure(flow)})
    return records


def kde_nll(samples: Tensor, test: Tensor, *, bandwidth: float, chunk: int = 2048) -> float:
    """Mean ``-log`` of a Gaussian kernel density estimate built on ``samples``, at ``test``.

    ``-mean_i log (1/m) sum_j N(test_i; samples_j, bandwidth^2 I)``: a smoothed cross-entropy
    of the data under the model's samples (lower is better; the same estimate built on true
    data draws is the reference a perfect model would score).
    """
    if samples.dim() != 2 or test.dim() != 2 or samples.shape[1] != test.shape[1]:
        raise ValueError(f"samples and test must be (m, D) and (n, D); got {samples.shape}, {test.shape}")
    s, t = samples.double(), test.double()
    dim = s.shape[1]
    norm = math.log(s.shape[0]) + 0.5 * dim * math.log(2 * math.pi * bandwidth**2)
    out = []
    for i in range(0, t.shape[0], chunk):
        d2 = torch.cdist(t[i : i + chunk], s).pow(2)
        out.append(torch.logsumexp(-d2 / (2 * bandwidth**2), dim=1) - norm)
    return float(-torch.cat(out).mean())
