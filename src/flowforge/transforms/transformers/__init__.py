"""Elementwise monotone bijections with external parameters, shared by all layer families.

See :mod:`flowforge.transforms.transformers.base` for the interface.
"""

from .base import AdditiveTransformer, AffineTransformer, Transformer
from .splines import PiecewiseLinearTransformer, PiecewiseQuadraticTransformer, RQSplineTransformer

__all__ = [
    "AdditiveTransformer",
    "AffineTransformer",
    "PiecewiseLinearTransformer",
    "PiecewiseQuadraticTransformer",
    "RQSplineTransformer",
    "Transformer",
]
