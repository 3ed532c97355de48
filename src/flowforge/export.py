"""Export posterior draws of a VI fit: CSV for any tool, netCDF in ArviZ's layout for ArviZ.

The netCDF file is an ArviZ ``DataTree`` (``arviz-base``, the optional extra ``netcdf``) with one
chain: group ``posterior`` holds one variable per coordinate (the target's names where it has
them), group ``sample_stats`` the flow's ``log_q`` and, where the target is known, the log
importance weights ``log_weight = log p~(x) - log q(x)``, so that ArviZ's PSIS tools can reweight
the draws.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["draws_to_csv", "draws_to_netcdf"]


def _names(d: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"x{i + 1}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"{len(names)} names for draws of {d} coordinates; expected {d}")
    return [str(n) for n in names]


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"draws must have shape (n, ...) with n >= 1; got {x.shape}")
    return x.reshape(x.shape[0], -1)


def draws_to_csv(x: np.ndarray, path: str | Path, *, names: Sequence[str] | None = None) -> Path:
    """Write draws ``(n, d)`` (or ``(n, *event)``, flattened) as CSV with a header row of names.

    Examples:
        >>> import numpy as np, tempfile, pathlib
        >>> where = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
        >>> draws_to_csv(np.zeros((3, 2)), where, names=["mu", "tau"]).read_text().splitlines()[0]
        'mu,tau'
    """
    flat = _flat(x)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, flat, delimiter=",", header=",".join(_names(flat.shape[1], names)), comments="")
    return path


def draws_to_netcdf(
    x: np.ndarray,
    path: str | Path,
    *,
    names: Sequence[str] | None = None,
    log_q: np.ndarray | None = None,
    log_weight: np.ndarray | None = None,
) -> Path:
    """Write draws ``(n, d)`` as an ArviZ-compatible netCDF file (one chain of ``n`` draws).

    Names such as ``theta[3]`` become variables ``theta`` with a coordinate dimension (ArviZ's
    convention for vector parameters); other names are scalar variables.

    Args:
        x: draws ``(n, d)`` (or ``(n, *event)``, flattened).
        path: output ``.nc`` file.
        names: one name per coordinate (default ``x1 .. xd``).
        log_q: the flow's log-density at the draws, ``(n,)``.
        log_weight: ``log p~(x) - log q(x)``, ``(n,)``.

    Raises:
        ImportError: ``arviz-base`` (or its netCDF writer ``h5netcdf`` with ``h5py``) is not
            installed; the message says how to install it.
    """
    try:
        import arviz_base
        import h5netcdf  # noqa: F401  (the writer xarray needs for groups)
        import h5py  # noqa: F401  (h5netcdf's HDF5 backend; not always pulled in by h5netcdf)
    except ImportError as e:
        raise ImportError(
            f"netCDF export needs arviz-base, h5netcdf and h5py ({e.name} is missing): "
            "pip install 'flowforge[netcdf]'"
        ) from None
    flat = _flat(x)
    n, d = flat.shape
    labels = _names(d, names)
    posterior: dict[str, np.ndarray] = {}
    vectors: dict[str, list[tuple[int, int]]] = {}
    for j, label in enumerate(labels):
        m = re.fullmatch(r"([A-Za-z_][\w.]*)\[(\d+)\]", label)
        if m:
            vectors.setdefault(m.group(1), []).append((int(m.group(2)), j))
        else:
            posterior[label] = flat[None, :, j]
    for base, items in vectors.items():
        items.sort()
        posterior[base] = flat[None, :, [j for _, j in items]]
    stats = {}
    for key, value in (("log_q", log_q), ("log_weight", log_weight)):
        if value is not None:
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            if value.shape[0] != n:
                raise ValueError(f"{key} has {value.shape[0]} values for {n} draws")
            stats[key] = value[None, :]
    groups = {"posterior": posterior, **({"sample_stats": stats} if stats else {})}
    tree = arviz_base.from_dict(groups)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.to_netcdf(path, engine="h5netcdf")
    return path
