"""Targets by name: the built-in :data:`TARGETS`, and ``module:function`` strings (for the CLI)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .base import Target, from_callable
from .eight_schools import EightSchools
from .energies import Energy
from .funnel import Banana, Funnel
from .mixture import GaussianMixture

__all__ = ["TARGETS", "from_string", "get"]

# name -> factory of a fresh target; keyword arguments of get() reach the factory.
TARGETS: dict[str, Callable[..., Target]] = {
    "u1": partial(Energy, "u1"),
    "u2": partial(Energy, "u2"),
    "u3": partial(Energy, "u3"),
    "u4": partial(Energy, "u4"),
    "u2-window": partial(Energy, "u2", window=4.0),
    "u3-window": partial(Energy, "u3", window=4.0),
    "u4-window": partial(Energy, "u4", window=4.0),
    "eight-schools-centered": partial(EightSchools, centered=True),
    "eight-schools-noncentered": partial(EightSchools, centered=False),
    "two-schools-centered": partial(EightSchools, centered=True, schools=(0, 1)),
    "two-schools-noncentered": partial(EightSchools, centered=False, schools=(0, 1)),
    "funnel": Funnel,
    "banana": Banana,
    "mixture": GaussianMixture,
}

_ALIASES = {"eight-schools": "eight-schools-centered", "two-schools": "two-schools-centered"}


def _load_object(spec: str) -> Any:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'module:function' or 'path/to/file.py:function'; got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise FileNotFoundError(f"{spec!r}: no file {path}")
        mod_name = f"_flowforge_target_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"{spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"{spec!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def from_string(spec: str, *, dim: int | None = None, **kwargs: Any) -> Target:
    """A target named by ``"module:attribute"`` or ``"path/to/file.py:attribute"``.

    The attribute may be a :class:`Target` instance (returned as is), a ``Target`` subclass
    (instantiated with ``kwargs``) or a batched log-density function ``(n, dim) -> (n,)``, which
    needs its dimension: the ``dim`` argument, or a ``dim`` attribute set on the function.

    Examples:
        >>> t = from_string("flowforge.targets:Funnel", dim=4)
        >>> t.name, t.dim
        ('funnel', 4)
    """
    obj = _load_object(spec)
    if isinstance(obj, Target):
        return obj
    if inspect.isclass(obj) and issubclass(obj, Target):
        return obj(**({"dim": dim} if dim is not None else {}), **kwargs)
    if callable(obj):
        dim = dim if dim is not None else getattr(obj, "dim", None)
        if dim is None:
            raise ValueError(
                f"{spec!r} is a function; give its dimension (dim=..., or --dim on the command line, "
                "or set a `dim` attribute on the function)"
            )
        return from_callable(obj, int(dim), name=spec.rpartition(":")[2], **kwargs)
    raise TypeError(f"{spec!r} is a {type(obj).__name__}; expected a Target, a Target class or a function")


def get(name: str, **kwargs: Any) -> Target:
    """A fresh target by registry name (see :data:`TARGETS`), or by ``module:attribute``.

    Raises:
        ValueError: unknown name; the message lists the known ones.

    Examples:
        >>> get("u1").log_z
        1.8775016
    """
    key = _ALIASES.get(name, name)
    if key in TARGETS:
        return TARGETS[key](**kwargs)
    if ":" in name:
        return from_string(name, **kwargs)
    raise ValueError(
        f"unknown target {name!r}; expected one of {sorted(TARGETS)}, an alias {sorted(_ALIASES)}, "
        "or 'module:function'"
    )
