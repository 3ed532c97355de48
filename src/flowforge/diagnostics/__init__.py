"""Diagnostics of a variational fit: is the flow a good approximation of the target?

- :mod:`~flowforge.diagnostics.elbo`: draws with log-weights, the ELBO with its standard error;
- :mod:`~flowforge.diagnostics.psis`: PSIS k-hat and importance ESS (arviz-stats);
- :mod:`~flowforge.diagnostics.importance`: reweighted posterior moments, IS estimate of ``log Z``;
- :mod:`~flowforge.diagnostics.reference`: against reference draws (moment errors, W2, EUBO,
  forward KL, reference draws in low-``q`` regions);
- :mod:`~flowforge.diagnostics.jacobian`: Jacobian singular values, condition numbers, round trip,
  log-det check;
- :mod:`~flowforge.diagnostics.health`: the same per layer (where a drift comes from);
- :mod:`~flowforge.diagnostics.defensive`: defensive importance sampling, the posterior mass the
  flow misses (what PSIS cannot see);
- :mod:`~flowforge.diagnostics.multistart`: agreement between restarts;
- :mod:`~flowforge.diagnostics.verdict`: the one-line verdict; :func:`diagnose` runs everything.

Examples:
    >>> import torch, flowforge as ff
    >>> from flowforge import diagnostics, targets, transforms as T
    >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.Diagonal(2)])
    >>> print(diagnostics.elbo(flow, targets.Banana()))
    ELBO ... ± ... (n=4096); log Z 0.0000, KL(q||p) = ...
"""

from . import defensive as _defensive
from . import elbo as _elbo
from . import health as _health
from . import importance as _importance
from . import jacobian as _jacobian
from . import multistart as _multistart
from . import psis as _psis
from . import reference as _reference
from . import summary as _summary
from . import verdict as _verdict
from .defensive import *  # noqa: F403
from .elbo import *  # noqa: F403
from .health import *  # noqa: F403
from .importance import *  # noqa: F403
from .jacobian import *  # noqa: F403
from .multistart import *  # noqa: F403
from .psis import *  # noqa: F403
from .reference import *  # noqa: F403
from .summary import *  # noqa: F403
from .verdict import *  # noqa: F403

_MODULES = [
    _defensive,
    _elbo,
    _health,
    _importance,
    _jacobian,
    _multistart,
    _psis,
    _reference,
    _summary,
    _verdict,
]

__all__ = sorted({name for module in _MODULES for name in module.__all__})
