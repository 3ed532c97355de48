"""The :class:`Target` interface: an unnormalized log-density for variational inference.

A target is what :func:`flowforge.fit_vi` fits a flow to. It is callable (``target(z)`` is
``target.log_density(z)``), so it can be passed wherever a plain ``log_density`` function is
expected, and it carries what the diagnostics need to judge a fit: the dimension, the log
normalizing constant where it is known, and reference posterior draws where they exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..errors import ShapeError

__all__ = ["CallableTarget", "Target", "from_callable"]


class Target:
    """An unnormalized density ``p~(z) = Z p(z)`` on ``R^dim``.

    Subclasses implement :meth:`_log_density` on points of shape ``(n, dim)``; :meth:`log_density`
    accepts any batch shape ``(*batch, dim)`` (including none) and returns ``(*batch)``, computed
    with torch operations in the dtype and on the device of ``z`` so that gradients reach the flow.

    Attributes:
        name: a short name (the registry name for built-in targets).
        dim: the number of (unconstrained) coordinates.
        log_z: ``log Z = log integral p~(z) dz`` where it is known exactly, else ``None``. No ELBO
            can exceed it; an ELBO above it (beyond Monte Carlo error) is a bug.
        names: one label per coordinate, for reports.
    """

    name: str = "target"
    dim: int
    log_z: float | None = None

    @property
    def names(self) -> list[str]:
        return [f"z{i + 1}" for i in range(self.dim)]

    def _log_density(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def log_density(self, z: Tensor) -> Tensor:
        """``log p~(z)`` for ``z`` of shape ``(*batch, dim)``; returns shape ``batch``.

        Raises:
            ShapeError: the last dimension of ``z`` is not ``dim``.
        """
        if not isinstance(z, Tensor):
            raise TypeError(f"{self.name}: log_density expects a torch.Tensor; got {type(z).__name__}")
        if z.dim() < 1 or z.shape[-1] != self.dim:
            raise ShapeError(
                f"{self.name}: expected points of shape (*batch, {self.dim}); got {tuple(z.shape)}"
            )
        batch = z.shape[:-1]
        return self._log_density(z.reshape(-1, self.dim)).reshape(batch)

    def __call__(self, z: Tensor) -> Tensor:
        return self.log_density(z)

    def reference_draws(self) -> Tensor | None:
        """Posterior draws ``(n, dim)`` (float64) in the target's coordinates, or ``None``.

        Exact i.i.d. draws where the target can be sampled directly, long-run MCMC draws
        otherwise (see each target's documentation); always the same draws for a given target.
        """
        return None

    def __repr__(self) -> str:
        log_z = "unknown" if self.log_z is None else f"{self.log_z:.4f}"
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, log_z={log_z})"


class CallableTarget(Target):
    """A user function wrapped as a :class:`Target` (see :func:`from_callable`)."""

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        dim: int,
        *,
        name: str | None = None,
        log_z: float | None = None,
        draws: Tensor | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"the log-density must be callable; got {type(fn).__name__}")
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive int; got {dim!r}")
        self.fn = fn
        self.dim = int(dim)
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        self.log_z = None if log_z is None else float(log_z)
        if draws is not None:
            draws = torch.as_tensor(draws, dtype=torch.float64)
            if draws.dim() != 2 or draws.shape[1] != self.dim:
                raise ShapeError(
                    f"{self.name}: reference draws must have shape (n, {self.dim}); got {tuple(draws.shape)}"
                )
        self._draws = draws
        if names is not None and len(names) != self.dim:
            raise ValueError(f"{self.name}: {len(names)} names for {self.dim} coordinates")
        self._names = list(names) if names is not None else None

    @property
    def names(self) -> list[str]:
        return self._names if self._names is not None else super().names

    def _log_density(self, z: Tensor) -> Tensor:
        out = self.fn(z)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"{self.name} returned a {type(out).__name__}; it must return a torch.Tensor "
                "computed with torch operations, so that gradients reach the flow"
            )
        if tuple(out.shape) != (z.shape[0],):
            raise ShapeError(
                f"{self.name} returned shape {tuple(out.shape)} for {z.shape[0]} points of shape "
                f"({self.dim},); expected ({z.shape[0]},): one log-density per point"
            )
        return out

    def reference_draws(self) -> Tensor | None:
        return self._draws


def from_callable(
    fn: Callable[[Tensor], Tensor],
    dim: int,
    *,
    name: str | None = None,
    log_z: float | None = None,
    draws: Tensor | None = None,
    names: Sequence[str] | None = None,
) -> CallableTarget:
    """Wrap a batched log-density function ``fn((n, dim)) -> (n,)`` as a :class:`Target`.

    Args:
        fn: the unnormalized log-density, written with torch operations.
        dim: the number of coordinates.
        name: a label for reports (default: the function's name).
        log_z: its log normalizing constant, if known.
        draws: reference posterior draws ``(n, dim)``, if any (enables the reference diagnostics).
        names: coordinate labels.

    Examples:
        >>> import torch
        >>> t = from_callable(lambda z: -0.5 * (z**2).sum(-1), 3, log_z=1.5 * 1.8378770664093453)
        >>> t(torch.zeros(4, 2, 3)).shape
        torch.Size([4, 2])
    """
    return CallableTarget(fn, dim, name=name, log_z=log_z, draws=draws, names=names)
