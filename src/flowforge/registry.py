"""The allow-list of classes a spec may name, spec validation, and building flows from specs.

Specs are plain data: ``{"type": ClassName, **arguments}`` for transforms and base
distributions, ``{"transformer": ClassName, **arguments}`` for transformers, nested in
lists and dicts (see :mod:`flowforge.spec`). Only names exported by
``flowforge.transforms``, ``flowforge.distributions``, ``flowforge.transforms.transformers``
(and, for ``{"model": ...}`` specs, ``flowforge.models``) are accepted, looked up live so
that new layers are covered without a list to maintain. Nothing is imported by name.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .errors import SpecError
from .spec import to_spec

__all__ = [
    "Registry",
    "build_flow",
    "check_flow_spec",
    "flow_spec",
    "model_builders",
    "parse_spec_text",
    "registry",
]

MAX_DEPTH = 64
MAX_NODES = 100_000


@dataclass
class Registry:
    """Classes a spec may name, by kind."""

    transforms: dict[str, type]
    distributions: dict[str, type]
    transformers: dict[str, type]


def registry() -> Registry:
    """The live allow-list (concrete classes in the packages' ``__all__``)."""
    from . import distributions as D
    from . import transforms as T
    from .transforms import transformers as TR

    def pick(module: types.ModuleType, root: type) -> dict[str, type]:
        out = {}
        for name in module.__all__:
            obj = getattr(module, name, None)
            if isinstance(obj, type) and issubclass(obj, root) and obj is not root:
                out[name] = obj
        return out

    return Registry(pick(T, T.Transform), pick(D, D.BaseDistribution), pick(TR, TR.Transformer))


def flow_spec(flow: Any) -> dict:
    """``{"base": spec, "transforms": [spec, ...]}`` of a :class:`~flowforge.Flow`."""
    return {"base": to_spec(flow.base), "transforms": [to_spec(t) for t in flow.transform.transforms]}


def parse_spec_text(text: str) -> Any:
    """JSON, else YAML (``safe_load``: plain data only, never objects)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"the spec is neither valid JSON nor valid YAML: {e}") from None


def _unknown(what: str, name: object, valid: Sequence[str], path: str) -> SpecError:
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SpecError(f"{path}: unknown {what} {name!r}{hint}; valid: {', '.join(sorted(valid))}")


_SIMPLE = (int, float, str, bool, type(None))


def _is_simple(annotation: Any) -> bool:
    if annotation in _SIMPLE:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, list, tuple, Sequence):
        return all(a is Ellipsis or _is_simple(a) for a in typing.get_args(annotation))
    return False


@functools.cache
def _signature(fn: Any) -> tuple[inspect.Signature, dict[str, Any]]:
    target = fn.__init__ if isinstance(fn, type) else fn
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(inspect.unwrap(target))
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    return signature, hints


def _check_arguments(fn: Any, name: str, args: dict, path: str) -> None:
    signature, hints = _signature(fn)
    params = [p for p in signature.parameters.values() if p.name != "self"]
    allowed = None if any(p.kind is p.VAR_KEYWORD for p in params) else [p.name for p in params]
    if allowed is not None:
        for key in args:
            if key not in allowed:
                raise _unknown(f"argument of {name}", key, allowed, path)
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty and p.name not in args:
            raise SpecError(f"{path}: {name} needs the argument {p.name!r}")
        annotation = hints.get(p.name)
        if p.name in args and annotation is not None and _is_simple(annotation):
            try:
                TypeAdapter(annotation).validate_python(args[p.name])
            except ValidationError as e:
                raise SpecError(
                    f"{path}.{p.name}: {args[p.name]!r} is not a valid {name} argument "
                    f"(expected {inspect.formatannotation(annotation)}): {e.errors()[0]['msg']}"
                ) from None


class _Walk:
    def __init__(self) -> None:
        self.nodes = 0
        self.stack: list[int] = []


def _check_value(
    value: Any, path: str, walk: _Walk, kinds: tuple[str, ...] = ("transforms", "distributions")
):
    walk.nodes += 1
    if walk.nodes > MAX_NODES:
        raise SpecError(f"the spec has more than {MAX_NODES} entries (reused YAML anchors?); refused")
    if isinstance(value, dict | list):
        if id(value) in walk.stack:
            raise SpecError(f"{path} contains itself (a cycle of YAML references); refused")
        if len(walk.stack) >= MAX_DEPTH:
            raise SpecError(f"{path} is nested more than {MAX_DEPTH} levels deep; refused")
        walk.stack.append(id(value))
        try:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _check_value(item, f"{path}[{i}]", walk)
            elif "type" in value:
                _check_layer(value, path, walk, kinds)
            elif "transformer" in value:
                _check_layer(value, path, walk, ("transformers",), key="transformer")
            else:
                for k, item in value.items():
                    if not isinstance(k, str):
                        raise SpecError(f"{path}: keys must be strings; got {k!r}")
                    _check_value(item, f"{path}.{k}", walk)
        finally:
            walk.stack.pop()
    elif not isinstance(value, _SIMPLE):
        raise SpecError(
            f"{path}: {type(value).__name__} values are not allowed in a spec (numbers, strings only)"
        )


def _check_layer(node: dict, path: str, walk: _Walk, kinds: tuple[str, ...], key: str = "type") -> None:
    reg = registry()
    pool: dict[str, type] = {}
    for kind in kinds:
        pool.update(getattr(reg, kind))
    name = node[key]
    what = {"transforms": "layer", "distributions": "base distribution", "transformers": "transformer"}
    label = " or ".join(what[k] for k in kinds)
    if not isinstance(name, str) or name not in pool:
        raise _unknown(f"{label} type", name, list(pool), path)
    args = {k: v for k, v in node.items() if k != key}
    _check_arguments(pool[name], name, args, f"{path}")
    for k, v in args.items():
        _check_value(v, f"{path}.{k}", walk)


def check_flow_spec(spec: Any, path: str = "spec") -> None:
    """Validate ``{"base": ..., "transforms": [...]}`` without building anything.

    Raises:
        SpecError: naming the entry (``spec.transforms[2].bins``) and the valid choices.

    Examples:
        >>> spec = {"base": {"type": "StandardNormal", "shape": [2]}, "transforms": [{"type": "LULinaer"}]}
        >>> try:
        ...     check_flow_spec(spec)
        ... except SpecError as e:
        ...     print(str(e).split(";")[0])
        spec.transforms[0]: unknown layer type 'LULinaer' (did you mean 'LULinear'?)
    """
    if not isinstance(spec, dict) or set(spec) != {"base", "transforms"}:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise SpecError(f"{path} must have exactly the keys 'base' and 'transforms'; got {keys}")
    walk = _Walk()
    if not isinstance(spec["base"], dict) or "type" not in spec["base"]:
        raise SpecError(f"{path}.base must be a mapping with a 'type'")
    walk.stack.append(id(spec))
    _check_value(spec["base"], f"{path}.base", walk, ("distributions",))
    if not isinstance(spec["transforms"], list):
        raise SpecError(f"{path}.transforms must be a list of layers")
    for i, t in enumerate(spec["transforms"]):
        if not isinstance(t, dict) or "type" not in t:
            raise SpecError(f"{path}.transforms[{i}] must be a mapping with a 'type'")
        _check_value(t, f"{path}.transforms[{i}]", walk, ("transforms",))


def _build_value(value: Any, path: str) -> Any:
    if isinstance(value, list):
        return tuple(_build_value(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        if "type" in value:
            return _build_layer(value, path)
        if "transformer" in value:
            return _build_layer(value, path, key="transformer")
        return {k: _build_value(v, f"{path}.{k}") for k, v in value.items()}
    return value


def _build_layer(node: dict, path: str, key: str = "type") -> Any:
    reg = registry()
    name = node[key]
    cls = {**reg.transforms, **reg.distributions, **reg.transformers}[name]
    args = {k: _build_value(v, f"{path}.{k}") for k, v in node.items() if k != key}
    signature, _ = _signature(cls)
    positional: tuple = ()
    for p in signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL and p.name in args:
            positional = tuple(args.pop(p.name))
    return _call(cls, name, positional, args, path)


def _call(fn: Any, name: str, positional: tuple, args: dict, path: str) -> Any:
    try:
        return fn(*positional, **args)
    except SpecError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError, OverflowError) as e:
        raise SpecError(f"{path} ({name}): {e}") from None


def build_flow(spec: dict, path: str = "spec") -> Any:
    """A :class:`~flowforge.Flow` from a spec already checked by :func:`check_flow_spec`."""
    from .flow import Flow

    base = _build_layer(spec["base"], f"{path}.base")
    layers = [_build_layer(t, f"{path}.transforms[{i}]") for i, t in enumerate(spec["transforms"])]
    return _call(Flow, "Flow", (base, layers), {}, path)


class _Models:
    """``{"model": Name, **kwargs}`` specs: the builders exported by ``flowforge.models``."""

    def names(self) -> list[str]:
        from . import models

        return sorted(models.__all__)

    def build(self, spec: dict) -> Any:
        from . import models
        from .flow import Flow

        name = spec["model"]
        if not isinstance(name, str) or name not in self.names():
            raise _unknown("model", name, self.names(), "spec.model")
        builder = getattr(models, name)
        args = {k: v for k, v in spec.items() if k != "model"}
        walk = _Walk()
        _check_arguments(builder, name, args, "spec")
        for k, v in args.items():
            _check_value(v, f"spec.{k}", walk)
        flow = _call(builder, name, (), {k: _build_value(v, f"spec.{k}") for k, v in args.items()}, "spec")
        if not isinstance(flow, Flow):
            raise SpecError(f"model {name} returned a {type(flow).__name__}, not a Flow")
        return flow


def model_builders() -> _Models:
    return _Models()
