"""Users' data files (CSV, ``.npy``, ``.npz``) as tensors, with errors that say what is wrong.

A data file holds one row per sample: a CSV file has one column per feature (a header
line is detected and skipped); an ``.npy`` array has shape ``(n, *event)`` (a 1-D array is
read as one feature); an ``.npz`` archive holds one such array (or name it with ``key=``).
Files are never unpickled. Every problem (a missing or empty file, ragged rows, a cell
that is not a number, NaN or inf, the wrong number of columns) raises :class:`DataError`
naming the file, the row and the column where it can.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import FlowforgeError

__all__ = ["FILE_FORMATS", "DataError", "check_finite", "load", "load_file"]

FILE_FORMATS = (".csv", ".tsv", ".txt", ".npy", ".npz")


class DataError(FlowforgeError, ValueError):
    """A data set cannot be used as given (unreadable, ragged, non-numeric, non-finite, misshapen)."""


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_finite(x: Tensor, what: str) -> None:
    """Raise :class:`DataError` naming the first row with NaN or inf, and how many there are."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)) if x.dim() else ~torch.isfinite(x.reshape(1, 1))
    if bool(bad.any()):
        rows = torch.nonzero(bad.any(1)).reshape(-1)
        first = int(rows[0])
        col = int(torch.nonzero(bad[first]).reshape(-1)[0])
        raise DataError(
            f"{what} has {int(bad.sum())} non-finite value(s) (NaN or inf) in {rows.numel()} row(s); "
            f"the first is row {first}, column {col}. Remove or impute those rows"
        )


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_text(path: Path) -> np.ndarray:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet programs put before the first cell.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not a text file ({e.reason} at byte {e.start}); expected CSV text") from e
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty; expected one row per sample, one column per feature")
    if delimiter == "," and "," not in lines[0] and path.suffix == ".txt":
        delimiter = None  # whitespace-separated text
    try:
        rows = [
            row
            for row in (csv.reader(lines, delimiter=delimiter) if delimiter else (ln.split() for ln in lines))
        ]
    except csv.Error as e:  # e.g. a field longer than the csv module's limit
        raise DataError(f"{path} cannot be read as CSV: {e}") from e
    if len(rows) != len(lines):
        # csv would join a quoted field across lines ("2<newline>3" read as 23): refuse instead.
        raise DataError(f"{path} has a quoted field spanning lines; expected one row per line")
    rows = [[cell.strip() for cell in row] for row in rows]
    # A first line without a single number is a header; a partly numeric one is bad data.
    start = 1 if not any(_is_number(c) for c in rows[0]) else 0
    if start >= len(rows):
        raise DataError(f"{path} has a header line but no data rows")
    width = len(rows[start])
    for i, row in enumerate(rows[start:], start=start + 1):
        if len(row) != width:
            raise DataError(
                f"{path} is ragged: line {i} has {len(row)} field(s), the first data line has {width}"
            )
        for j, cell in enumerate(row):
            if not _is_number(cell):
                raise DataError(f"{path}, line {i}, column {j + 1}: {cell!r} is not a number")
    return np.array([[float(c) for c in row] for row in rows[start:]], dtype=np.float64)


def _read_numpy(path: Path, key: str | None) -> np.ndarray:
    try:
        return _numpy_array(path, key)
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(
                f"{path} holds Python objects, which would need unpickling (never done); "
                "save a numeric array instead"
            ) from e
        raise DataError(f"cannot read {path} as a numpy file: {e}") from e
    except Exception as e:
        # A damaged file fails deep in numpy or zipfile (BadZipFile, EOFError, tokenizer errors,
        # MemoryError for a header claiming a huge shape): all of them mean the same to the user.
        raise DataError(f"cannot read {path} as a numpy file: {type(e).__name__}: {e}") from e


def _numpy_array(path: Path, key: str | None) -> np.ndarray:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if key is None:
                if len(keys) != 1:
                    raise DataError(f"{path} holds arrays {keys}; choose one with key=")
                key = keys[0]
            if key not in keys:
                raise DataError(f"{path} has no array {key!r}; it holds {keys}")
            try:
                array = loaded[key]
            except ValueError as e:
                raise DataError(f"{path}[{key!r}] holds Python objects, which are never unpickled") from e
    else:
        array = loaded
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{path} holds an array of dtype {array.dtype}; expected numbers")
    if np.iscomplexobj(array):
        raise DataError(f"{path} holds complex numbers ({array.dtype}); expected real ones")
    return array


def load_file(
    path: str | Path,
    *,
    features: int | Sequence[int] | None = None,
    key: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Read a CSV, ``.npy`` or ``.npz`` file into a tensor of shape ``(n, *event)``.

    Args:
        path: the file; the format comes from its suffix (``.csv``, ``.tsv``, ``.txt``,
            ``.npy``, ``.npz``).
        features: the event size or shape the data must have (e.g. a model's), if known.
        key: the array to read from an ``.npz`` archive holding several.
        dtype: the floating dtype of the result.

    Raises:
        DataError: with the file, line and column of the problem.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.csv"; _ = p.write_text("x,y\\n1,2\\n3,4\\n")
        >>> load_file(p)
        tensor([[1., 2.],
                [3., 4.]])
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such data file: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a directory; expected a data file ({', '.join(FILE_FORMATS)})")
    suffix = path.suffix.lower()
    if suffix not in FILE_FORMATS:
        raise DataError(
            f"cannot read {path}: unknown suffix {suffix!r}; expected one of {', '.join(FILE_FORMATS)}"
        )
    array = _read_numpy(path, key) if suffix in (".npy", ".npz") else _read_text(path)
    if array.ndim == 0:
        raise DataError(f"{path} holds a single number; expected one row per sample")
    if array.ndim == 1:
        array = array[:, None]
    if array.shape[0] == 0:
        raise DataError(f"{path} has no rows")
    raw = torch.as_tensor(np.ascontiguousarray(array))
    check_finite(raw, str(path))
    x = raw.to(dtype)
    if features is not None:
        expected = (int(features),) if isinstance(features, int) else tuple(int(f) for f in features)
        if tuple(x.shape[1:]) != expected:
            raise DataError(
                f"{path} has rows of shape {_shape_str(x.shape[1:])}; "
                f"the model expects {_shape_str(expected)}"
            )
    if not bool(torch.isfinite(x).all()):
        big = float(raw.abs().max())
        raise DataError(f"{path} has values up to {big:.3g}, beyond the range of {dtype}; rescale them first")
    return x


def load(
    source: str | Path,
    *,
    n: int = 10_000,
    seed: int = 0,
    features: int | Sequence[int] | None = None,
    key: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A built-in 2-D data set by name (``n`` points drawn with ``seed``) or a data file by path.

    Examples:
        >>> load("moons", n=100).shape
        torch.Size([100, 2])
    """
    from .toy2d import GENERATORS, generate

    text = str(source)
    if text in GENERATORS:
        x = generate(text, n, seed=seed).to(dtype)
        if features is not None and tuple(x.shape[1:]) != (
            (int(features),) if isinstance(features, int) else tuple(features)
        ):
            raise DataError(f"data set {text!r} has 2 features; the model expects {features}")
        return x
    path = Path(text)
    if not path.suffix and not path.exists():
        raise DataError(
            f"{text!r} is neither a built-in data set ({', '.join(sorted(GENERATORS))}) nor a data file"
        )
    return load_file(path, features=features, key=key, dtype=dtype)
