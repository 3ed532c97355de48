"""flowforge: normalizing flows with exact inverses and diagnostics you can trust.

Direction convention: a transform's ``forward`` is generative (base -> data), its
``inverse`` normalizing (data -> base); both return ``(output, ladj)``.
"""

from . import diagnostics, distributions, targets, transforms
from .checks import CheckReport, check_transform
from .errors import FlowforgeError, InversionError, ShapeError, SpecError
from .flow import Flow, FlowDistribution
from .io import build, load, save
from .settings import set_validation, validation, validation_enabled
from .train import History, fit, fit_vi

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "Flow",
    "FlowDistribution",
    "FlowforgeError",
    "History",
    "InversionError",
    "ShapeError",
    "SpecError",
    "__version__",
    "build",
    "check_transform",
    "diagnostics",
    "distributions",
    "fit",
    "fit_vi",
    "load",
    "save",
    "set_validation",
    "targets",
    "transforms",
    "validation",
    "validation_enabled",
]
