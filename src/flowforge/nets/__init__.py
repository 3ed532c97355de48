"""Conditioner networks: they need not be invertible, only produce a layer's parameters."""

from .made import MADE
from .mlp import MLP
from .resnet import ResNet

__all__ = ["MADE", "MLP", "ResNet"]
