"""Exception types raised by flowforge.

Every error a user can trigger derives from :class:`FlowforgeError`, and the ones
that concern a bad argument also derive from :class:`ValueError` so that generic
``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = ["FlowforgeError", "InversionError", "ModelFileError", "ShapeError", "SpecError"]


class FlowforgeError(Exception):
    """Base class of all flowforge errors."""


class ShapeError(FlowforgeError, ValueError):
    """An input does not have the shape a transform or distribution expects."""


class SpecError(FlowforgeError, ValueError):
    """A model specification or configuration is invalid."""


class ModelFileError(FlowforgeError, ValueError):
    """A saved model's files are missing, truncated, tampered with or do not match its config."""


class InversionError(FlowforgeError, RuntimeError):
    """An iterative inverse did not reach its tolerance.

    Attributes:
        residual: the largest residual reached when the iteration stopped.
        iterations: the number of iterations performed.
    """

    def __init__(self, message: str, *, residual: float = float("nan"), iterations: int = 0) -> None:
        super().__init__(f"{message} (residual {residual:.3e} after {iterations} iterations)")
        self.residual = residual
        self.iterations = iterations
