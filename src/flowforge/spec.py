"""Recording constructor arguments so that any flow built from library classes can be saved.

Every subclass of :class:`Recorded` (all transforms and base distributions) remembers the
arguments of its outermost constructor call. ``to_spec(obj)`` turns such an object into
plain JSON data, recursively (nested transforms, transformers, tuples); ``flowforge.io``
rebuilds it from a registry of allowed names, never by importing arbitrary objects.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from .errors import SpecError

__all__ = ["Recorded", "to_spec"]


class Recorded:
    """Mixin: records ``{"type": ClassName, **bound constructor arguments}`` on construction."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original = cls.__init__
        signature = inspect.signature(original)

        @functools.wraps(original)
        def __init__(self, *args: Any, **kw: Any) -> None:
            if "_spec_args" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                arguments = dict(bound.arguments)
                arguments.pop(next(iter(signature.parameters)))
                for name, p in signature.parameters.items():
                    if p.kind is inspect.Parameter.VAR_POSITIONAL and name in arguments:
                        arguments[name] = list(arguments[name])
                    if p.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
                        arguments.update(arguments.pop(name))
                object.__setattr__(self, "_spec_args", (type(self).__name__, arguments))
            original(self, *args, **kw)

        cls.__init__ = __init__


def _value(v: Any, path: str) -> Any:
    from .transforms.transformers import Transformer

    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [_value(item, f"{path}[{i}]") for i, item in enumerate(v)]
    if isinstance(v, dict):
        return {str(k): _value(item, f"{path}.{k}") for k, item in v.items()}
    if isinstance(v, Recorded):
        return to_spec(v)
    if isinstance(v, Transformer):
        return {"transformer": type(v).__name__, **{k: _value(x, path) for k, x in v.config().items()}}
    raise SpecError(
        f"cannot save argument {path} of type {type(v).__name__}: only numbers, strings, lists, "
        "flowforge transforms, transformers and distributions are saveable (custom networks are not)"
    )


def to_spec(obj: Recorded) -> dict:
    """The JSON-ready spec of a transform or distribution built from library classes.

    Examples:
        >>> from flowforge import transforms as T
        >>> to_spec(T.LeakyReLU(0.2))
        {'type': 'LeakyReLU', 'negative_slope': 0.2}
    """
    if "_spec_args" not in obj.__dict__:
        raise SpecError(f"{type(obj).__name__} did not record its constructor arguments")
    name, arguments = obj.__dict__["_spec_args"]
    return {"type": name, **{k: _value(v, f"{name}.{k}") for k, v in arguments.items()}}
