"""Saved models: :func:`save`, :func:`load` and :func:`build`.

A saved model is a directory with two files:

- ``config.json``: ``{"format": "flowforge", "version": 2, "flowforge": ..., "torch": ...,
  "dtype": ..., "flow": {"base": spec, "transforms": [spec, ...]}, "weights_sha256": ...,
  "weights_bytes": ..., "standardizer": ..., "metadata": {...}}`` where each spec is
  ``{"type": ClassName, **constructor arguments}`` (see :mod:`flowforge.spec`);
- ``model.safetensors``: the state dict (parameters and buffers), via safetensors.

Loading is safe for untrusted files: nothing is unpickled and no module named in a file is
imported. The config is validated (pydantic for its structure, then every layer name
against an allow-list, the registry of ``flowforge.transforms``, ``flowforge.distributions``
and ``flowforge.transforms.transformers``, and every argument against the constructor's
signature) before anything is built; the weights must match the recorded checksum and
size, their header is bounds-checked before any tensor is allocated, and every key and
shape must match the model exactly. Any failure raises before a model is returned, so a
model is never half-loaded.

Files of an older format version load as the map they were saved as: a layer default that
changed since (version 2: :class:`~flowforge.transforms.AffineCoupling` shifts first and
bounds its log-scale by ``(1, 3)``) is written back into every layer of the old file that
left it out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._alloc import AllocationLimitError, allocation_limit
from ._safefiles import atomic_write, check_keys, read_weights
from .errors import ModelFileError, SpecError
from .flow import Flow
from .registry import build_flow, check_flow_spec, flow_spec, model_builders, parse_spec_text
from .transforms.coupling import AFFINE_COUPLING_V1
from .transforms.standardize import Standardize

__all__ = ["ModelFileError", "build", "flow_spec", "load", "read_config", "save"]

FORMAT, VERSION = "flowforge", 2
# Defaults that changed between format versions: ``{version: {layer type: {argument: old default}}}``.
# A file of an older version gets the old default written into every layer that left it out,
# so that it rebuilds the map it was trained as.
_OLD_DEFAULTS: dict[int, dict[str, dict[str, Any]]] = {
    # version 2: AffineCoupling shifts first, its log-scale bound is (1, 3) instead of 3
    1: {"AffineCoupling": dict(AFFINE_COUPLING_V1)},
}
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
MAX_CONFIG_BYTES = 16 * 2**20
_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class _FlowPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: dict[str, Any]
    transforms: list[dict[str, Any]]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["flowforge"]
    version: int = Field(ge=1)
    flowforge: str
    torch: str
    dtype: Literal["float32", "float64", "float16", "bfloat16"]
    flow: _FlowPart
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weights_bytes: int = Field(ge=8)
    standardizer: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


def _pydantic_message(e: ValidationError, what: str) -> str:
    lines = [f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()[:8]]
    return f"{what} is invalid: " + "; ".join(lines)


def save(flow: Flow, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``flow`` as a directory ``path`` with ``config.json`` and ``model.safetensors``.

    Each file is written to a temporary name and renamed into place, weights first: an
    interrupted save leaves a directory that :func:`load` refuses (checksum), never a
    silently mixed model.

    Args:
        flow: a flow built from library classes (custom layers cannot be loaded without
            user code, so they are refused here with the offending argument named).
        path: the directory (created if needed).
        metadata: JSON-ready extra information stored in the config.

    Returns:
        The directory.

    Examples:
        >>> import tempfile, torch, flowforge as ff
        >>> from flowforge import transforms as T
        >>> flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2)])
        >>> d = ff.save(flow, tempfile.mkdtemp() + "/model")
        >>> x = torch.randn(4, 2); torch.equal(ff.load(d).log_prob(x), flow.log_prob(x))
        True
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"save expects a flowforge.Flow; got {type(flow).__name__}")
    spec = flow_spec(flow)
    check_flow_spec(spec, "flow")  # refuses classes that load could not rebuild
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelFileError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save as st_save

    # Cloning breaks shared storage (tied or aliased tensors), which safetensors refuses.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in flow.state_dict().items()}
    blob = st_save(tensors, metadata={"format": "pt"})
    # Non-persistent buffers count too: a flow without weights still has a working dtype.
    floating = [t.dtype for t in (*flow.parameters(), *flow.buffers()) if t.is_floating_point()]
    dtype = {v: k for k, v in _DTYPES.items()}.get(floating[0] if floating else torch.float32, "float32")
    standardizer = None
    for i, t in enumerate(flow.transform.transforms):
        if isinstance(t, Standardize):
            standardizer = {"index": i, "mean": t.mean.flatten().tolist(), "std": t.std.flatten().tolist()}
    from . import __version__

    config = {
        "format": FORMAT,
        "version": VERSION,
        "flowforge": __version__,
        "torch": torch.__version__,
        "dtype": dtype,
        "flow": spec,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "weights_bytes": len(blob),
        "standardizer": standardizer,
        "metadata": metadata or {},
    }
    text = json.dumps(config, indent=1)
    atomic_write(path / WEIGHTS_NAME, blob)
    atomic_write(path / CONFIG_NAME, text.encode())
    return path


def _config_path(path: Path) -> Path:
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            return path / CONFIG_NAME
        if (path / "model" / CONFIG_NAME).is_file():  # a run directory of the command line
            return path / "model" / CONFIG_NAME
        raise ModelFileError(f"{path} holds no {CONFIG_NAME}: not a saved flowforge model")
    if path.name == CONFIG_NAME and path.is_file():
        return path
    raise ModelFileError(
        f"no saved model at {path} (expected a directory with {CONFIG_NAME} and {WEIGHTS_NAME})"
    )


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated ``config.json`` of a saved model (or of a run directory holding ``model/``)."""
    cfg_path = _config_path(Path(path))
    size = cfg_path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{cfg_path} is {size} bytes; a config over {MAX_CONFIG_BYTES} bytes is refused")
    try:
        raw = json.loads(cfg_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # deep nesting: RecursionError
        raise ModelFileError(f"{cfg_path} is not valid JSON: {e}") from e
    if isinstance(raw, dict) and isinstance(raw.get("version"), int) and raw["version"] > VERSION:
        raise ModelFileError(
            f"{cfg_path} has format version {raw['version']}, newer than this flowforge reads "
            f"({VERSION}); upgrade flowforge"
        )
    try:
        config = _Config.model_validate(raw).model_dump()
    except ValidationError as e:
        raise SpecError(_pydantic_message(e, str(cfg_path))) from None
    check_flow_spec(config["flow"], "flow")
    config["flow"] = _upgrade_spec(config["flow"], config["version"])
    config["path"] = str(cfg_path.parent)
    return config


def _upgrade_spec(spec: Any, version: int) -> Any:
    """``spec`` (a saved flow's layers) with the defaults of format ``version`` made explicit.

    Layers record only the arguments they were given, so a default that changes later would
    silently change the map of an old file; every such change is listed in ``_OLD_DEFAULTS``.

    Examples:
        >>> _upgrade_spec({"type": "AffineCoupling", "features": 2}, 1)
        {'type': 'AffineCoupling', 'features': 2, 'shift_first': False, 'scale_bound': 3.0}
    """
    changes: dict[str, dict[str, Any]] = {}
    for v in sorted(_OLD_DEFAULTS, reverse=True):  # the nearest version at or after the file's wins
        if version <= v:
            for layer, args in _OLD_DEFAULTS[v].items():
                changes.setdefault(layer, {}).update(args)
    return _with_defaults(spec, changes) if changes else spec


def _with_defaults(node: Any, changes: dict[str, dict[str, Any]]) -> Any:
    if isinstance(node, list):
        return [_with_defaults(item, changes) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _with_defaults(v, changes) for k, v in node.items()}
    for arg, old in changes.get(out.get("type"), {}).items():
        out.setdefault(arg, old)
    return out


def _meta_shapes(spec: dict, dtype: torch.dtype) -> dict | None:
    # Building on the meta device allocates nothing, so a config that asks for a huge model is
    # caught by comparing with the (checksummed, size-checked) weights before any allocation.
    # Layers whose constructors need real data fall back to the ordinary build.
    try:
        with torch.device("meta"):
            flow = build_flow(spec, "flow").to(dtype)
    except Exception:
        return None
    return {k: (tuple(v.shape), v.dtype) for k, v in flow.state_dict().items()}


def load(
    path: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Flow:
    """Load a model saved by :func:`save` (or the ``model/`` of a ``flowforge fit`` run directory).

    Needs no user code. Returns the flow in eval mode, with the dtype it was saved in
    unless ``dtype`` is given. The config is available as ``flow.saved_config``.

    Raises:
        SpecError: the config is invalid (an unknown layer: the valid names are listed).
        ModelFileError: missing files, wrong size or checksum, malformed header, missing or
            unexpected keys, shape or dtype mismatches, NaN or infinite weights.
    """
    config = read_config(path)
    folder = Path(config["path"])
    where = folder / WEIGHTS_NAME
    blob, found = read_weights(where, config["weights_bytes"], config["weights_sha256"])
    saved_dtype = _DTYPES[config["dtype"]]
    meta = _meta_shapes(config["flow"], saved_dtype)
    if meta is not None:
        check_keys(meta, found, where)
    # Layers that cannot be built on the meta device are built for real: under a cap scaled to
    # the (size-checked) weights, so that a crafted config cannot allocate without bound.
    budget = 16 * config["weights_bytes"] + 64 * 2**20
    try:
        with allocation_limit(budget):
            flow = build_flow(config["flow"], "flow").to(saved_dtype)
    except AllocationLimitError as e:
        raise ModelFileError(
            f"{folder / CONFIG_NAME}: building its architecture would allocate far more than its "
            f"{config['weights_bytes']}-byte weights ({e}); refused"
        ) from None
    check_keys({k: (tuple(v.shape), v.dtype) for k, v in flow.state_dict().items()}, found, where)
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise ModelFileError(f"{where} cannot be read: {e}") from e
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelFileError(
            f"{where}: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} hold NaN or infinite values "
            "(weights of a diverged fit, or a damaged file); refused"
        )
    flow.load_state_dict(tensors, strict=True)
    flow.to(device=device, dtype=dtype)
    flow.eval()
    flow.saved_config = config
    return flow


def build(spec: dict | str | Path) -> Flow:
    """A fresh (untrained) :class:`~flowforge.Flow` from a spec: a dict, JSON or YAML text, or a file.

    Two forms:

    - ``{"model": "RealNVP", "features": 2, ...}``: a builder of ``flowforge.models`` and its
      keyword arguments;
    - ``{"base": {"type": "StandardNormal", "shape": [2]}, "transforms": [{"type": "LULinear",
      "features": 2}, ...]}``: explicit layers (also accepted: a saved model's ``config.json``).

    Raises:
        SpecError: with the path of the offending entry and, for unknown names or arguments,
            the valid ones.

    Examples:
        >>> flow = build('''
        ... base: {type: StandardNormal, shape: [2]}
        ... transforms:
        ...   - {type: LULinear, features: 2}
        ...   - {type: RationalQuadraticSpline, features: 2, bins: 4}
        ... ''')
        >>> flow.sample((3,)).shape
        torch.Size([3, 2])
    """
    if isinstance(spec, Path) or (
        isinstance(spec, str)
        and "\n" not in spec
        and Path(spec).suffix
        in (
            ".json",
            ".yaml",
            ".yml",
        )
    ):
        p = Path(spec)
        if not p.is_file():
            raise SpecError(f"no spec file {p}")
        spec = p.read_text()
    if isinstance(spec, str):
        spec = parse_spec_text(spec)
    if not isinstance(spec, dict):
        raise SpecError(f"a spec must be a mapping; got {type(spec).__name__}")
    if spec.get("format") == FORMAT and "flow" in spec:
        version = spec.get("version")
        spec = _upgrade_spec(spec["flow"], version) if isinstance(version, int) else spec["flow"]
    if "model" in spec:
        return model_builders().build(spec)
    if "base" in spec and "transforms" in spec:
        check_flow_spec(spec, "spec")
        return build_flow(spec, "spec")
    raise SpecError(
        f"a spec needs either 'model' (one of {model_builders().names()}) or 'base' and 'transforms'; "
        f"got keys {sorted(spec)}"
    )
