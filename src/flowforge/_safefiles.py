"""Verified reading and atomic writing of saved files (models for :mod:`flowforge.io`, checkpoints).

A weights file is trusted only after its size and checksum match the config and its
safetensors header has been bounds-checked; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import ModelFileError

__all__ = ["atomic_write", "check_keys", "read_weights"]

MAX_HEADER_BYTES = 100 * 2**20
_ST_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}


def atomic_write(
    path: Path, data: bytes | Callable[[BinaryIO], object], *, temp_prefix: str | None = None
) -> None:
    """Write ``path`` through a synced temporary file and a rename: all or nothing.

    ``data`` is the bytes, or a function that writes them to the open binary file (``torch.save``
    of a checkpoint). The temporary file lies next to ``path``, named ``temp_prefix`` (default
    ``.NAME-``) + random + ``.tmp``; it is removed if the write fails or is interrupted, and the
    directory is synced after the rename where the platform allows, so the rename survives a
    power loss too.
    """
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix or f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on every platform.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_weights(
    path: Path, size_bytes: int, sha256: str
) -> tuple[bytes, dict[str, tuple[tuple[int, ...], torch.dtype]]]:
    """The bytes of a safetensors file and ``{key: (shape, dtype)}`` from its header, verified.

    The file must have the recorded size and checksum, and every header entry a known dtype and
    a byte range inside the file that fits its shape: checked before any tensor is allocated.
    """
    if not path.is_file():
        raise ModelFileError(f"{path} is missing")
    size = path.stat().st_size
    if size != size_bytes:
        raise ModelFileError(
            f"{path} has {size} bytes but its config records {size_bytes}: truncated or replaced"
        )
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ModelFileError(f"{path} does not match the checksum in its config: corrupted or tampered with")
    n = int.from_bytes(blob[:8], "little")
    if not 2 <= n <= min(MAX_HEADER_BYTES, size - 8):
        raise ModelFileError(f"{path}: safetensors header length {n} is out of bounds for a {size}-byte file")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelFileError(f"{path}: unreadable safetensors header ({e})") from e
    body = size - 8 - n
    for key, entry in header.items() if isinstance(header, dict) else ():
        if key == "__metadata__":
            continue
        ok = isinstance(entry, dict) and entry.get("dtype") in _ST_DTYPES
        shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
        ok = (
            ok
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
        )
        if ok:
            begin, end = offsets
            numel = 1
            for s in shape:
                numel *= s
            ok = 0 <= begin <= end <= body and end - begin == numel * _ST_DTYPES[entry["dtype"]][1]
        if not ok:
            raise ModelFileError(
                f"{path}: the header entry for {key!r} is malformed or points outside the file"
            )
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is not a JSON object")
    shapes = {
        k: (tuple(e["shape"]), _ST_DTYPES[e["dtype"]][0]) for k, e in header.items() if k != "__metadata__"
    }
    return blob, shapes


def check_keys(expected: dict, found: dict, where: Path) -> None:
    """Refuse ``found`` ``{key: (shape, dtype)}`` unless it is exactly ``expected``."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        more_m, more_u = (" ..." if len(missing) > 5 else ""), (" ..." if len(unexpected) > 5 else "")
        raise ModelFileError(
            f"{where} does not match the architecture in its config: missing keys {missing[:5]}{more_m}, "
            f"unexpected keys {unexpected[:5]}{more_u}"
        )
    for key, (shape, dtype) in expected.items():
        if found[key] != (shape, dtype):
            raise ModelFileError(
                f"{where}: {key} has shape {found[key][0]} and dtype {found[key][1]}; "
                f"the model needs {shape} and {dtype}"
            )
