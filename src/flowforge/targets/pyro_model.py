"""Pyro models as targets: :func:`from_pyro` (needs the optional extra ``pyro-ppl``).

The latent sites of the model are mapped to ``R^dim`` with Pyro's own constraint transforms
(``pyro.distributions.transforms.biject_to(site.support)``: ``exp`` for positive sites, stick-breaking
for simplexes, and so on), concatenated in the order the model samples them, and the
log-density is the model's joint log-probability at the constrained values plus the
log-Jacobian of each transform, which is what a flow on the unconstrained space must fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .base import Target

__all__ = ["PyroTarget", "from_pyro"]


def _import_pyro() -> Any:
    try:
        import pyro
        import pyro.poutine
    except ImportError as e:
        raise ImportError(
            "targets.from_pyro needs Pyro, an optional extra: pip install 'flowforge[pyro]' "
            "(or pip install pyro-ppl)"
        ) from e
    return pyro


class PyroTarget(Target):
    """A Pyro model's posterior on the unconstrained space of its latent sites.

    .. math::

        \\log \\tilde p(u) = \\log p(\\text{data}, T(u)) + \\log |\\det \\partial T / \\partial u|

    with ``T`` Pyro's bijection from ``R^dim`` onto each site's support. ``log_z`` (the model
    evidence) is unknown unless given.

    Args:
        model: a Pyro model (a callable using ``pyro.sample``); observed sites carry ``obs=``.
        args: positional arguments passed to the model on every call.
        kwargs: keyword arguments passed to the model on every call.
        name: a label for reports.
        log_z: the log evidence, if known.

    Cost: one trace of the model per point (points are evaluated one at a time, because Pyro
    models are not in general vectorised over a leading batch dimension).
    """

    def __init__(
        self,
        model: Callable,
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        name: str | None = None,
        log_z: float | None = None,
    ) -> None:
        pyro = _import_pyro()
        # Pyro's registry: torch's bijections plus Pyro's own constraints (ordered vectors,
        # correlation Cholesky factors, spheres, ...).
        from pyro.distributions.transforms import biject_to

        self._pyro = pyro
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs or {})
        self.name = name or getattr(model, "__name__", "pyro-model")
        self.log_z = None if log_z is None else float(log_z)
        with torch.no_grad():
            trace = pyro.poutine.trace(pyro.poutine.block(model, hide_types=["param"])).get_trace(
                *self.args, **self.kwargs
            )
        self.sites: list[tuple[str, Any, torch.Size]] = []
        self._names: list[str] = []
        for site_name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
                continue
            if type(site["fn"]).__name__ == "_Subsample":
                continue
            transform = biject_to(site["fn"].support)
            unconstrained = transform.inv(site["value"])
            self.sites.append((site_name, transform, unconstrained.shape))
            size = unconstrained.numel()
            self._names += [site_name] if size == 1 else [f"{site_name}[{i}]" for i in range(size)]
        if not self.sites:
            raise ValueError(f"the Pyro model {self.name} has no latent sample sites")
        self.dim = len(self._names)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def unflatten(self, u: Tensor) -> dict[str, Tensor]:
        """The constrained site values at one unconstrained point ``u`` of shape ``(dim,)``."""
        return {name: value for name, value, _ in self._split(u)}

    def _split(self, u: Tensor) -> list[tuple[str, Tensor, Tensor]]:
        out, start = [], 0
        for name, transform, shape in self.sites:
            n = math.prod(shape)
            piece = u[start : start + n].reshape(shape)
            start += n
            value = transform(piece)
            ladj = transform.log_abs_det_jacobian(piece, value).sum()
            out.append((name, value, ladj))
        return out

    def _one(self, u: Tensor) -> Tensor:
        pyro = self._pyro
        parts = self._split(u)
        conditioned = pyro.poutine.condition(self.model, data={n: v for n, v, _ in parts})
        trace = pyro.poutine.trace(conditioned).get_trace(*self.args, **self.kwargs)
        return trace.log_prob_sum() + sum(ladj for _, _, ladj in parts)

    def _log_density(self, z: Tensor) -> Tensor:
        if z.shape[0] == 0:
            return z.new_zeros(0)
        return torch.stack([self._one(u) for u in z]).to(z.dtype)


def from_pyro(model: Callable, *args: Any, name: str | None = None, **kwargs: Any) -> PyroTarget:
    """The posterior of a Pyro model as a :class:`Target` on the unconstrained space.

    Args:
        model: the Pyro model; observed sites must be given with ``obs=`` (or conditioned).
        *args: the model's positional arguments.
        **kwargs: the model's keyword arguments.
        name: a label for reports.

    Raises:
        ImportError: Pyro is not installed (``pip install 'flowforge[pyro]'``).

    Examples:
        >>> import pyro, pyro.distributions as dist, torch  # doctest: +SKIP
        >>> def model(y):
        ...     scale = pyro.sample("scale", dist.HalfNormal(1.0))
        ...     pyro.sample("y", dist.Normal(0.0, scale), obs=y)
        >>> t = from_pyro(model, torch.tensor(0.3))  # doctest: +SKIP
        >>> t.dim, t.names  # doctest: +SKIP
        (1, ['scale'])
    """
    return PyroTarget(model, args, kwargs, name=name)
