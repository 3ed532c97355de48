"""Data sets: built-in 2-D sets, users' files (CSV, .npy, .npz) and images (8x8 digits)."""

from .files import FILE_FORMATS, DataError, load, load_file
from .images import DIGITS_LEVELS, ImageData, digits
from .memmap import MemmapData
from .toy2d import GENERATORS as TOY2D
from .toy2d import entropy, generate

__all__ = [
    "DIGITS_LEVELS",
    "FILE_FORMATS",
    "TOY2D",
    "DataError",
    "ImageData",
    "MemmapData",
    "digits",
    "entropy",
    "generate",
    "load",
    "load_file",
]
