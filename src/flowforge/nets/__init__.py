"""Conditioner networks: they need not be invertible, only produce a layer's parameters."""

from .mlp import MLP

__all__ = ["MLP"]
