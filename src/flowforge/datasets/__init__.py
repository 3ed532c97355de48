"""Data sets: built-in 2-D sets, users' files (CSV, .npy, .npz) and, in later modules, images."""

from .files import FILE_FORMATS, DataError, load, load_file
from .toy2d import GENERATORS as TOY2D
from .toy2d import entropy, generate

__all__ = ["FILE_FORMATS", "TOY2D", "DataError", "entropy", "generate", "load", "load_file"]
