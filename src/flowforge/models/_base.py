"""The base distribution shared by the ML builders: a standard normal or a standard Student-t."""

from __future__ import annotations

from collections.abc import Sequence

from ..distributions import BaseDistribution, StandardNormal, StudentT


def standard_base(shape: int | Sequence[int], df: float | None) -> BaseDistribution:
    """``N(0, I)`` when ``df`` is ``None``, else independent Student-t components with ``df`` degrees
    of freedom."""
    if df is None:
        return StandardNormal(shape)
    if isinstance(df, bool) or not isinstance(df, int | float) or not df > 0:
        raise ValueError(f"base_df must be a positive number or None (a standard normal base); got {df!r}")
    return StudentT(shape, df=float(df))
