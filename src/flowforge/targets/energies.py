"""Rezende & Mohamed's four 2-D test energies U1-U4 (seed 003 re-runs their figure).

Each target is ``p~(z) = exp(-U(z))`` with, from table 1 of Rezende & Mohamed (2015),

.. math::

    U_1(z) &= \\tfrac12\\Big(\\frac{\\lVert z\\rVert - 2}{0.4}\\Big)^2
        - \\ln\\Big(e^{-\\frac12 (\\frac{z_1 - 2}{0.6})^2} + e^{-\\frac12 (\\frac{z_1 + 2}{0.6})^2}\\Big)\\\\
    U_2(z) &= \\tfrac12\\Big(\\frac{z_2 - w_1(z)}{0.4}\\Big)^2\\\\
    U_3(z) &= -\\ln\\Big(e^{-\\frac12 (\\frac{z_2 - w_1(z)}{0.35})^2}
        + e^{-\\frac12 (\\frac{z_2 - w_1(z) + w_2(z)}{0.35})^2}\\Big)\\\\
    U_4(z) &= -\\ln\\Big(e^{-\\frac12 (\\frac{z_2 - w_1(z)}{0.4})^2}
        + e^{-\\frac12 (\\frac{z_2 - w_1(z) + w_3(z)}{0.35})^2}\\Big)

with :math:`w_1(z) = \\sin(2\\pi z_1 / 4)`, :math:`w_2(z) = 3 e^{-\\frac12 ((z_1 - 1)/0.6)^2}`,
:math:`w_3(z) = 3\\,\\sigma((z_1 - 1)/0.3)` and :math:`\\sigma` the logistic sigmoid.

Only U1 is normalisable: ``log Z(U1) = 1.8775`` (by quadrature on a fine grid; the tests
re-derive it). U2-U4 do not decay in ``z1`` (each slice of constant ``z1`` has the same mass,
up to the periodic ``w1``), so their integral over ``R^2`` diverges and ``log Z`` grows with
any box they are cut to; their ``log_z`` is ``None``, and an ELBO on them is not a measure of fit:
a flow raises it by spreading along ``z1``. The paper (and seed 003) plot them on ``[-4, 4]^2``;
``Energy(which, window=4.0)`` (registry names ``u2-window`` ...) keeps them unchanged on
``|z1| <= 4`` and lets them fall off outside, which makes them normalisable with an exact ``log Z``.

References:
    Rezende & Mohamed. "Variational Inference with Normalizing Flows". ICML 2015, table 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Target

__all__ = ["U1", "U2", "U3", "U4", "Energy"]

# log Z(U1) by a 4001 x 4001 grid on [-8, 8]^2 (the density is below 1e-40 outside it);
# tests/test_targets.py recomputes it.
LOG_Z_U1 = 1.8775016


def _w1(z1: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z1 / 4)


def _w2(z1: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)


def _w3(z1: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z1 - 1) / 0.3)


def _log_sum(a: Tensor, b: Tensor) -> Tensor:
    return torch.logaddexp(a, b)


def _u1(z: Tensor) -> Tensor:
    z1 = z[:, 0]
    ring = 0.5 * ((torch.linalg.vector_norm(z, dim=-1) - 2) / 0.4) ** 2
    return ring - _log_sum(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)


def _u2(z: Tensor) -> Tensor:
    return 0.5 * ((z[:, 1] - _w1(z[:, 0])) / 0.4) ** 2


def _u3(z: Tensor) -> Tensor:
    z1, z2 = z[:, 0], z[:, 1]
    d = z2 - _w1(z1)
    return -_log_sum(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + _w2(z1)) / 0.35) ** 2)


def _u4(z: Tensor) -> Tensor:
    z1, z2 = z[:, 0], z[:, 1]
    d = z2 - _w1(z1)
    return -_log_sum(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + _w3(z1)) / 0.35) ** 2)


_ENERGIES = {"u1": _u1, "u2": _u2, "u3": _u3, "u4": _u4}


# For U2-U4 every slice of constant z1 holds the same mass, c sqrt(2 pi) with c the sum of the
# Gaussian widths in z2 (the w terms only shift the Gaussians): 0.4, 0.35 + 0.35, 0.4 + 0.35.
_SLICE_WIDTH = {"u2": 0.4, "u3": 0.7, "u4": 0.75}


class Energy(Target):
    """One of Rezende & Mohamed's 2-D energies as a target ``p~(z) = exp(-U(z))``.

    Args:
        which: ``"u1"``, ``"u2"``, ``"u3"`` or ``"u4"``.
        window: for U2-U4 only: multiply by ``exp(-(max(|z1| - window, 0) / edge)^2 / 2)``, which
            keeps the density unchanged on ``|z1| <= window`` (the paper plots ``[-4, 4]^2``) and
            makes it normalisable, with an exact ``log Z`` (each slice of constant ``z1`` holds
            ``c sqrt(2 pi)``, ``c`` = 0.4, 0.7, 0.75 for U2, U3, U4):
            ``log Z = log(c sqrt(2 pi) (2 window + edge sqrt(2 pi)))``.
        edge: the width of the window's Gaussian fall-off.

    ``log_z`` is 1.8775 for U1, exact for windowed U2-U4 and ``None`` for plain U2-U4 (not
    normalisable, see the module). No reference draws. Cost: O(n) elementwise operations.

    References:
        Rezende & Mohamed. "Variational Inference with Normalizing Flows". ICML 2015, table 1.

    Examples:
        >>> import torch
        >>> U1().log_density(torch.tensor([[2.0, 0.0], [0.0, 0.0]])).round(decimals=3)
        tensor([  0.0000, -17.3620])
        >>> round(Energy("u2", window=4.0).log_z, 4)
        2.2276
    """

    dim = 2

    def __init__(self, which: str, *, window: float | None = None, edge: float = 0.5) -> None:
        key = str(which).lower()
        if key not in _ENERGIES:
            raise ValueError(f"unknown energy {which!r}; expected one of {sorted(_ENERGIES)}")
        self._u = _ENERGIES[key]
        self.window, self.edge = window, float(edge)
        if window is None:
            self.name = key
            self.log_z = LOG_Z_U1 if key == "u1" else None
            return
        if key == "u1":
            raise ValueError("U1 is normalisable as it is; window= is for U2-U4")
        if not (window > 0 and edge > 0):
            raise ValueError(f"window and edge must be positive; got window={window}, edge={edge}")
        self.window = float(window)
        self.name = f"{key}-window"
        root = math.sqrt(2 * math.pi)
        self.log_z = math.log(_SLICE_WIDTH[key] * root * (2 * self.window + self.edge * root))

    def _log_density(self, z: Tensor) -> Tensor:
        out = -self._u(z)
        if self.window is not None:
            out = out - 0.5 * (torch.relu(z[:, 0].abs() - self.window) / self.edge) ** 2
        return out

    def energy(self, z: Tensor) -> Tensor:
        """``U(z) = -log p~(z)`` for ``z`` of shape ``(*batch, 2)``."""
        return -self.log_density(z)


def U1() -> Energy:
    """Rezende & Mohamed's U1: a ring of radius 2 with two lobes at ``z1 = +-2``; ``log Z = 1.8775``."""
    return Energy("u1")


def U2() -> Energy:
    """Rezende & Mohamed's U2: a sine ridge ``z2 = sin(pi z1 / 2)`` (not normalisable in ``z1``)."""
    return Energy("u2")


def U3() -> Energy:
    """Rezende & Mohamed's U3: the sine ridge split by a bump at ``z1 = 1`` (not normalisable)."""
    return Energy("u3")


def U4() -> Energy:
    """Rezende & Mohamed's U4: the sine ridge and a sigmoid-shifted copy (not normalisable)."""
    return Energy("u4")
