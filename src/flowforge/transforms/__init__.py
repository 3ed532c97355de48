"""Invertible layers. Every class in ``__all__`` passes :func:`flowforge.check_transform`.

Direction: ``forward`` is generative (base -> data), ``inverse`` is normalizing
(data -> base); both return ``(output, ladj)``. See :mod:`flowforge.transforms.base`.
"""

from . import actnorm as _actnorm
from . import autoregressive as _autoregressive
from . import base as _base
from . import conv as _conv
from . import coupling as _coupling
from . import elementwise as _elementwise
from . import householder as _householder
from . import linear as _linear
from . import linear_coupling as _linear_coupling
from . import multiscale as _multiscale
from . import parametric as _parametric
from . import planar as _planar
from . import radial as _radial
from . import residual as _residual
from . import standardize as _standardize
from . import sylvester as _sylvester
from .actnorm import *  # noqa: F403
from .autoregressive import *  # noqa: F403
from .base import *  # noqa: F403
from .conv import *  # noqa: F403
from .coupling import *  # noqa: F403
from .elementwise import *  # noqa: F403
from .householder import *  # noqa: F403
from .linear import *  # noqa: F403
from .linear_coupling import *  # noqa: F403
from .multiscale import *  # noqa: F403
from .parametric import *  # noqa: F403
from .planar import *  # noqa: F403
from .radial import *  # noqa: F403
from .residual import *  # noqa: F403
from .standardize import *  # noqa: F403
from .sylvester import *  # noqa: F403

# One line per family module; each module owns its own __all__.
_FAMILIES = [
    _actnorm,
    _autoregressive,
    _base,
    _conv,
    _coupling,
    _elementwise,
    _householder,
    _linear,
    _linear_coupling,
    _multiscale,
    _parametric,
    _planar,
    _radial,
    _residual,
    _standardize,
    _sylvester,
]

__all__ = sorted({name for module in _FAMILIES for name in module.__all__})
