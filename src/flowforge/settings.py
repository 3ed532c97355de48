"""Global switches.

Argument validation (shape checks, finiteness of inputs to ``Flow.log_prob``) is on
by default; turn it off in hot loops once a pipeline is known to be right.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["set_validation", "validation", "validation_enabled"]

_VALIDATE = True


def set_validation(enabled: bool) -> None:
    """Turn argument validation on or off globally.

    Examples:
        >>> import flowforge as ff
        >>> ff.set_validation(False); ff.validation_enabled()
        False
        >>> ff.set_validation(True)
    """
    global _VALIDATE
    _VALIDATE = bool(enabled)


def validation_enabled() -> bool:
    """Whether argument validation is on."""
    return _VALIDATE


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager that sets validation for a block and restores it afterwards."""
    previous = _VALIDATE
    set_validation(enabled)
    try:
        yield
    finally:
        set_validation(previous)
