"""Data larger than memory: rows of a ``.npy`` file or a directory of ``.npy`` shards, read on demand.

:class:`MemmapData` memory-maps the arrays (``numpy.load(mmap_mode="r")``): nothing is read
until rows are asked for, and then only those rows' pages. :func:`~flowforge.fit` accepts one in
place of a tensor and streams its minibatches from disk; the training rows are checked, hashed
(for the checkpoint's fingerprint) and, with ``standardize=True``, their mean and standard
deviation computed in one streaming pass (:meth:`MemmapData.scan`), split across the processes
of a distributed run. What stays in memory is an index of 8 bytes per row (the split and the
epoch's shuffle), not the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ShapeError
from .files import DataError

__all__ = ["MemmapData", "Scan"]

# Rows per chunk of the streaming pass: a few MB for typical feature counts.
CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class Scan:
    """What one streaming pass learns about some rows: count, float64 mean and std, a SHA-256 digest."""

    count: int
    mean: Tensor
    std: Tensor
    digest: str

    @torch.no_grad()
    def fit(self, standardize: Any) -> list[int]:
        """Set a :class:`~flowforge.transforms.Standardize` from these moments, as its ``fit_to`` does.

        Returns:
            The flat indices of the constant features (their scale stays 1).
        """
        eps = torch.finfo(standardize.loc.dtype).eps
        constant = (self.std <= 16 * eps * self.mean.abs()) | (self.std == 0)
        std = torch.where(constant, torch.ones_like(self.std), self.std)
        standardize.loc.copy_(self.mean.to(standardize.loc.dtype))
        standardize.log_scale.copy_(std.log().to(standardize.log_scale.dtype))
        return [int(i) for i in torch.nonzero(constant.reshape(-1)).reshape(-1)]


def _open(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot memory-map {path} as a .npy array: {e}") from e
    if not isinstance(array, np.ndarray) or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise DataError(
            f"{path} does not hold a numeric .npy array (an .npz archive cannot be memory-mapped)"
        )
    if array.ndim == 0:
        raise DataError(f"{path} holds a single number; expected one row per sample")
    return array[:, None] if array.ndim == 1 else array


class MemmapData:
    """Rows of a ``.npy`` file, or of a directory of ``.npy`` shards in name order, memory-mapped.

    Indexing with an int, a slice or an index array reads just those rows into a tensor of
    ``dtype``; :meth:`subset` makes a lazy view of some rows (nothing is read).

    Args:
        path: a ``.npy`` file, or a directory whose ``*.npy`` files all have rows of one shape.
        dtype: the floating dtype rows are returned in.

    Raises:
        DataError: a missing path, an empty directory, shards whose row shapes differ, a non-numeric array.

    Examples:
        >>> import numpy as np, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> np.save(d / "a.npy", np.arange(6.0).reshape(3, 2)); np.save(d / "b.npy", np.ones((2, 2)))
        >>> x = MemmapData(d); x.shape, x[[4, 0]]
        (torch.Size([5, 2]), tensor([[1., 1.],
                [0., 1.]]))
        >>> x.subset(torch.tensor([1, 3])).scan().mean
        tensor([1.5000, 2.0000], dtype=torch.float64)
    """

    def __init__(self, path: str | Path, *, dtype: torch.dtype = torch.float32) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            files = sorted(self.path.glob("*.npy"))
            if not files:
                raise DataError(f"{self.path} is a directory without .npy shards")
        elif self.path.is_file():
            files = [self.path]
        else:
            raise DataError(f"no such data file or directory of .npy shards: {self.path}")
        self.files = files
        self.arrays = [_open(f) for f in files]
        event = self.arrays[0].shape[1:]
        for f, a in zip(files, self.arrays, strict=True):
            if a.shape[1:] != event:
                raise DataError(
                    f"shard {f.name} has rows of shape {tuple(a.shape[1:])}, but {files[0].name} has "
                    f"{tuple(event)}; all shards must have rows of one shape"
                )
        self.offsets = np.cumsum([0] + [a.shape[0] for a in self.arrays])
        if self.offsets[-1] == 0:
            raise DataError(f"{self.path} has no rows")
        self.dtype = dtype
        self.rows: np.ndarray | None = None  # a view's rows of the underlying arrays, in order
        self._scan: Scan | None = None

    @property
    def shape(self) -> torch.Size:
        n = int(self.offsets[-1]) if self.rows is None else len(self.rows)
        return torch.Size((n, *self.arrays[0].shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"MemmapData({str(self.path)!r}, shape={tuple(self.shape)}, shards={len(self.files)})"

    def checked(self, event_shape: Sequence[int], what: str = "data") -> MemmapData:
        """``self``, after checking that its rows have shape ``event_shape``.

        Raises:
            ShapeError: naming both shapes.
        """
        if tuple(self.shape[1:]) != tuple(event_shape):
            raise ShapeError(
                f"{what} ({self.path}) has rows of shape {tuple(self.shape[1:])}; the flow's event shape "
                f"is {tuple(event_shape)}"
            )
        return self

    def _base(self, index: Any) -> np.ndarray:
        n = len(self)
        if isinstance(index, slice):
            picked = np.arange(n)[index]
        else:
            picked = np.asarray(index.cpu() if isinstance(index, Tensor) else index, dtype=np.int64)
            if picked.size and (picked.min() < -n or picked.max() >= n):
                raise IndexError(f"row index out of range for {n} rows")
            picked = np.where(picked < 0, picked + n, picked)
        return picked if self.rows is None else self.rows[picked]

    def subset(self, index: Tensor | np.ndarray | slice) -> MemmapData:
        """A lazy view of the rows ``index`` (of this object, view or not); nothing is read."""
        view = object.__new__(MemmapData)
        view.__dict__.update(self.__dict__)
        view.rows, view._scan = self._base(index), None
        return view

    def __getitem__(self, index: int | slice | Tensor | np.ndarray | Sequence[int]) -> Tensor:
        if isinstance(index, int | np.integer):
            return self[[int(index)]][0]
        return self._read(self._base(index))

    def _gather(self, ranked: np.ndarray) -> np.ndarray:
        # The stored values of sorted rows: each page is read once and in file order.
        shard = np.searchsorted(self.offsets, ranked, side="right") - 1
        parts = [self.arrays[s][ranked[shard == s] - self.offsets[s]] for s in np.unique(shard)]
        return np.concatenate(parts) if parts else np.empty((0, *self.arrays[0].shape[1:]))

    def _read(self, rows: np.ndarray) -> Tensor:
        order = np.argsort(rows, kind="stable")
        raw = self._gather(rows[order])
        out = np.empty_like(raw)
        out[order] = raw  # back in the asked order
        return torch.from_numpy(out.astype(np.float64, copy=False)).to(self.dtype)

    def scan(self, *, world: Any = None, chunk_rows: int = CHUNK_ROWS) -> Scan:
        """One streaming pass over these rows: finiteness, mean and std (float64), SHA-256 (cached).

        The rows are visited in file order in chunks of ``chunk_rows``; with a distributed
        ``world`` (:class:`~flowforge.train.distributed.World`) rank ``r`` reads chunks
        ``r, r + size, ...`` and the results are gathered, so every rank must call it and all
        get the same :class:`Scan`. The digest does not depend on the number of processes.

        Raises:
            DataError: a row holds NaN or inf (the first such row is named).
        """
        if self._scan is not None:
            return self._scan
        rows = np.sort(self._base(slice(None)))
        starts = range(0, len(rows), chunk_rows)
        rank, size = (world.rank, world.size) if world is not None and world.active else (0, 1)
        parts = []
        for k in list(starts)[rank::size]:
            chunk = rows[k : k + chunk_rows]
            raw = self._gather(chunk)
            x = torch.from_numpy(raw.astype(np.float64)).reshape(len(chunk), -1)
            bad = ~torch.isfinite(x).all(1)
            if bool(bad.any()):
                parts.append((k, None, int(chunk[int(torch.nonzero(bad)[0])]), int(bad.sum())))
                continue
            h = hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest()
            mean = x.mean(0)
            parts.append((k, (len(chunk), mean, ((x - mean) ** 2).sum(0)), h, None))
        gathered = [p for ps in (world.all_gather(parts) if size > 1 else [parts]) for p in ps]
        gathered.sort(key=lambda p: p[0])
        broken = [p for p in gathered if p[1] is None]
        if broken:
            raise DataError(
                f"{self.path} has non-finite values (NaN or inf) in {sum(p[3] for p in broken)} row(s); the "
                f"first is row {broken[0][2]} (counting through the shards). Remove or impute those rows"
            )
        count, mean, m2 = 0, None, None
        for _, (n, m, s2), _, _ in gathered:  # Chan et al.'s merge of chunk moments
            if mean is None:
                count, mean, m2 = n, m, s2
                continue
            delta = m - mean
            total = count + n
            mean = mean + delta * n / total
            m2 = m2 + s2 + delta**2 * count * n / total
            count = total
        digest = hashlib.sha256(str(tuple(self.shape)).encode())
        digest.update(rows.tobytes())
        for p in gathered:
            digest.update(p[2].encode())
        event = self.shape[1:]
        self._scan = Scan(
            count=count,
            mean=mean.reshape(event),
            std=(m2 / count).sqrt().reshape(event) if count > 1 else torch.zeros(event, dtype=torch.float64),
            digest=digest.hexdigest(),
        )
        return self._scan
