"""Data sets: built-in 2-D sets (and, in later modules, images and user files)."""

from .toy2d import GENERATORS as TOY2D
from .toy2d import entropy, generate

__all__ = ["TOY2D", "entropy", "generate"]
