"""The eight schools hierarchical model (seed 003's posterior), centred and non-centred.

Data ``y_j`` (estimated treatment effects) with known standard errors ``sigma_j``, ``j = 1..J``:

.. math::

    \\mu \\sim N(0, 5^2),\\quad \\tau \\sim \\text{HalfCauchy}(0, 5),\\quad
    \\theta_j \\sim N(\\mu, \\tau^2),\\quad y_j \\sim N(\\theta_j, \\sigma_j^2).

The target lives on ``R^(J+2)``: ``[theta_1..theta_J, mu, log tau]`` (centred) or
``[theta~_1..theta~_J, mu, log tau]`` with ``theta = mu + tau theta~``, ``theta~ ~ N(0, 1)``
(non-centred). Both include the log-Jacobian ``log tau`` of ``tau = exp(log tau)`` once, and the
priors of ``mu`` and ``tau`` once, so both integrate to the evidence ``p(y)``:
``log p(y) = -31.3113`` for the eight schools (no ELBO can exceed it). Seed 003's own code
counted those priors and the Jacobian once per school, which is a different (wrong) target.

``schools=(0, 1)`` gives the two-school reduction seed 003 used for its depth study
(``y = (28, 8)``, ``sigma = (15, 10)``; ``log p(y) = -8.7801``).

Reference draws: for all eight schools, the 10,000 posteriordb NUTS draws shipped in
``flowforge/data/eight_schools`` (see its SOURCE.md); for a subset of schools, exact i.i.d.
draws (``tau`` by inverse-CDF on a fine grid of its marginal posterior, then ``mu`` and ``theta``
from their Gaussian conditionals). The evidence is computed the same way: ``theta`` and ``mu``
integrate out in closed form, ``log tau`` by adaptive quadrature.

References:
    Rubin. "Estimation in Parallel Randomized Experiments". J. Educational Statistics 1981.
    Gelman et al. "Bayesian Data Analysis", 3rd ed., section 5.5. CRC Press 2013.
    Magnusson et al. "posteriordb: a set of posteriors for Bayesian inference". 2022.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from .base import Target

__all__ = ["EightSchools", "eight_schools_data", "log_evidence", "posterior_draws"]

MU_SCALE = 5.0
TAU_SCALE = 5.0
_LOG_2PI = math.log(2 * math.pi)


def _data_dir():
    return resources.files("flowforge").joinpath("data/eight_schools")


def eight_schools_data() -> tuple[np.ndarray, np.ndarray]:
    """The data ``(y, sigma)`` (each of length 8) as shipped in ``flowforge/data/eight_schools``."""
    data = json.loads(_data_dir().joinpath("data.json").read_text())
    return np.asarray(data["y"], dtype=np.float64), np.asarray(data["sigma"], dtype=np.float64)


@lru_cache(maxsize=1)
def _nuts_draws() -> np.ndarray:
    # Columns: chain, theta1..theta8, mu, tau (original scale).
    with _data_dir().joinpath("reference_draws.csv").open() as f:
        return np.loadtxt(f, delimiter=",", skiprows=1)[:, 1:]


def _log_lik_tau(tau: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    # log p(y | tau) with theta and mu integrated out: y ~ N(0, diag(sigma^2 + tau^2) + 25 11').
    # Sherman-Morrison on the rank-one term, vectorised over tau.
    v = sigma[None, :] ** 2 + np.asarray(tau, dtype=np.float64)[..., None] ** 2
    a = (1.0 / v).sum(-1)
    b = (y / v).sum(-1)
    c = (y**2 / v).sum(-1)
    s2 = MU_SCALE**2
    logdet = np.log(v).sum(-1) + np.log1p(s2 * a)
    quad = c - s2 * b**2 / (1 + s2 * a)
    return -0.5 * (len(y) * _LOG_2PI + logdet + quad)


def _log_marginal_log_tau(u: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    # log p(y, log tau = u): likelihood, half-Cauchy prior, Jacobian of tau = exp(u).
    tau = np.exp(u)
    prior = math.log(2 / (math.pi * TAU_SCALE)) - np.log1p((tau / TAU_SCALE) ** 2)
    return _log_lik_tau(tau, y, sigma) + prior + u


def log_evidence(y: Sequence[float], sigma: Sequence[float]) -> float:
    """``log p(y)`` of the eight-schools model for data ``y`` with standard errors ``sigma``.

    ``theta`` and ``mu`` are integrated out analytically; ``log tau`` by adaptive quadrature
    (relative error below 1e-10).

    Examples:
        >>> y, sigma = eight_schools_data()
        >>> round(log_evidence(y, sigma), 4)
        -31.3113
    """
    from scipy import integrate  # here, to keep `import flowforge` light

    y, sigma = np.asarray(y, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    grid = np.linspace(-20.0, 12.0, 3201)
    log_dens = _log_marginal_log_tau(grid, y, sigma)
    shift = float(log_dens.max())
    value, _ = integrate.quad(
        lambda u: math.exp(float(_log_marginal_log_tau(np.array([u]), y, sigma)[0]) - shift),
        -40.0,
        20.0,
        points=[float(grid[np.argmax(log_dens)])],
        limit=500,
        epsabs=0.0,
        epsrel=1e-11,
    )
    return shift + math.log(value)


def posterior_draws(y: Sequence[float], sigma: Sequence[float], n: int, *, seed: int = 0) -> np.ndarray:
    """Exact i.i.d. posterior draws ``(n, J + 2)`` of ``[theta_1..theta_J, mu, tau]`` (original scale).

    ``log tau`` by inverse CDF on a grid of 40,001 points over ``[-20, 12]`` (its marginal density is
    known up to a constant), then ``mu | tau, y`` and ``theta | mu, tau, y`` from their Gaussian
    conditionals.
    """
    y, sigma = np.asarray(y, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    rng = np.random.default_rng(seed)
    grid = np.linspace(-20.0, 12.0, 40001)
    logp = _log_marginal_log_tau(grid, y, sigma)
    dens = np.exp(logp - logp.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    tau = np.exp(np.interp(rng.uniform(size=n), cdf, grid))
    v = sigma[None, :] ** 2 + tau[:, None] ** 2
    prec_mu = 1 / MU_SCALE**2 + (1 / v).sum(-1)
    mu = (y / v).sum(-1) / prec_mu + rng.standard_normal(n) / np.sqrt(prec_mu)
    prec_th = 1 / sigma[None, :] ** 2 + 1 / tau[:, None] ** 2
    mean_th = (y / sigma**2 + mu[:, None] / tau[:, None] ** 2) / prec_th
    theta = mean_th + rng.standard_normal((n, len(y))) / np.sqrt(prec_th)
    return np.column_stack([theta, mu, tau])


class EightSchools(Target):
    """The eight-schools posterior on ``[theta (or theta~), mu, log tau]``.

    .. math::

        \\log \\tilde p = \\sum_j \\log N(y_j | \\theta_j, \\sigma_j^2)
        + \\sum_j \\log N(\\theta_j | \\mu, \\tau^2) + \\log N(\\mu | 0, 25)
        + \\log \\text{HalfCauchy}(\\tau | 5) + \\log \\tau

    (centred; non-centred replaces the second sum by ``sum_j log N(theta~_j | 0, 1)`` with
    ``theta_j = mu + tau theta~_j``). Integrates to ``p(y)``: ``log_z`` is computed exactly.

    Args:
        centered: centred (``theta``) or non-centred (``theta~``) coordinates.
        schools: indices (0-based) of the schools kept; ``None`` keeps all eight, ``(0, 1)`` is
            seed 003's two-school reduction.

    Cost: O(n J) per evaluation.

    References:
        Gelman et al. "Bayesian Data Analysis", 3rd ed., section 5.5. CRC Press 2013.

    Examples:
        >>> import torch
        >>> t = EightSchools(centered=False)
        >>> t.dim, round(t.log_z, 4), t.reference_draws().shape
        (10, -31.3113, torch.Size([10000, 10]))
    """

    def __init__(self, *, centered: bool = True, schools: Sequence[int] | None = None) -> None:
        y, sigma = eight_schools_data()
        if schools is not None:
            idx = [int(i) for i in schools]
            if not idx or len(set(idx)) != len(idx) or not all(0 <= i < len(y) for i in idx):
                raise ValueError(f"schools must be distinct indices in 0..{len(y) - 1}; got {schools!r}")
            y, sigma = y[idx], sigma[idx]
        self.schools = None if schools is None else tuple(idx)
        self.centered = bool(centered)
        self.y, self.sigma = y, sigma
        self.J = len(y)
        self.dim = self.J + 2
        self.log_z = log_evidence(y, sigma)
        kind = "centered" if centered else "noncentered"
        prefix = "eight-schools" if self.J == 8 and self.schools is None else f"schools-{self.J}"
        self.name = f"{prefix}-{kind}"

    @property
    def names(self) -> list[str]:
        theta = "theta" if self.centered else "theta_tilde"
        return [f"{theta}{j + 1}" for j in range(self.J)] + ["mu", "log_tau"]

    def _log_density(self, z: Tensor) -> Tensor:
        y = torch.as_tensor(self.y, dtype=z.dtype, device=z.device)
        sigma = torch.as_tensor(self.sigma, dtype=z.dtype, device=z.device)
        x, mu, log_tau = z[:, : self.J], z[:, self.J], z[:, self.J + 1]
        tau = torch.exp(log_tau)
        if self.centered:
            theta = x
            group = -0.5 * ((theta - mu[:, None]) / tau[:, None]) ** 2 - log_tau[:, None]
        else:
            theta = mu[:, None] + tau[:, None] * x
            group = -0.5 * x**2
        lik = -0.5 * ((y - theta) / sigma) ** 2 - torch.log(sigma)
        # log(1 + tau^2 / 25) as a softplus, finite for any log tau.
        log_prior_tau = math.log(2 / (math.pi * TAU_SCALE)) - torch.nn.functional.softplus(
            2 * (log_tau - math.log(TAU_SCALE))
        )
        log_prior_mu = -0.5 * (mu / MU_SCALE) ** 2 - math.log(MU_SCALE)
        const = -(2 * self.J + 1) * 0.5 * _LOG_2PI
        return (lik + group).sum(-1) + log_prior_mu + log_prior_tau + log_tau + const

    def to_original(self, z: Tensor) -> Tensor:
        """Map points ``(*batch, J + 2)`` to ``[theta_1..theta_J, mu, tau]`` on the original scale."""
        x, mu, tau = z[..., : self.J], z[..., self.J], torch.exp(z[..., self.J + 1])
        theta = x if self.centered else mu[..., None] + tau[..., None] * x
        return torch.cat([theta, mu[..., None], tau[..., None]], -1)

    def from_original(self, draws: Tensor) -> Tensor:
        """Inverse of :meth:`to_original`."""
        theta, mu, tau = draws[..., : self.J], draws[..., self.J], draws[..., self.J + 1]
        x = theta if self.centered else (theta - mu[..., None]) / tau[..., None]
        return torch.cat([x, mu[..., None], torch.log(tau)[..., None]], -1)

    def reference_draws(self) -> Tensor:
        """NUTS draws (all eight schools) or exact draws (a subset), 10,000, in this target's coordinates."""
        if self.schools is None:
            original = _nuts_draws()
        else:
            original = posterior_draws(self.y, self.sigma, 10_000, seed=0)
        return self.from_original(torch.as_tensor(original, dtype=torch.float64))
