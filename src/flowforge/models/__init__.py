"""Model builders: each ``Model(features, ...)`` returns a ready-to-train :class:`~flowforge.Flow`.

Image models take ``shape=(C, H, W)``. One module per family; each owns its ``__all__``.
"""

from __future__ import annotations

from . import autoregressive as _autoregressive
from . import coupling as _coupling
from . import nsf as _nsf
from . import vi as _vi
from .autoregressive import *  # noqa: F403
from .coupling import *  # noqa: F403
from .nsf import *  # noqa: F403
from .vi import *  # noqa: F403

_FAMILIES: list = [
    _autoregressive,
    _coupling,
    _nsf,
    _vi,
]

__all__: list[str] = sorted({name for module in _FAMILIES for name in module.__all__})
