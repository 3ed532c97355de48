"""Unnormalized log-densities for variational inference (:func:`flowforge.fit_vi`).

Every target is a :class:`Target`: callable on points ``(*batch, dim)``, returning
``log p~(z)`` of shape ``batch``, with ``dim``, ``log_z`` where it is known exactly, and
``reference_draws()`` where they exist. Built-in ones by name: :func:`get` and :data:`TARGETS`;
user code: :func:`from_callable`, :func:`from_string` (``"module:function"``), :func:`from_pyro`.

Examples:
    >>> import torch
    >>> from flowforge import targets
    >>> t = targets.get("eight-schools-noncentered")
    >>> t(torch.zeros(3, t.dim)).shape
    torch.Size([3])
"""

from . import base as _base
from . import eight_schools as _eight_schools
from . import energies as _energies
from . import funnel as _funnel
from . import mixture as _mixture
from . import pyro_model as _pyro_model
from . import registry as _registry
from .base import *  # noqa: F403
from .eight_schools import *  # noqa: F403
from .energies import *  # noqa: F403
from .funnel import *  # noqa: F403
from .mixture import *  # noqa: F403
from .pyro_model import *  # noqa: F403
from .registry import *  # noqa: F403

_MODULES = [_base, _eight_schools, _energies, _funnel, _mixture, _pyro_model, _registry]

__all__ = sorted({name for module in _MODULES for name in module.__all__})
