"""A plain multilayer perceptron used as conditioner and hypernetwork."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

__all__ = ["MLP"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """``in_features -> hidden... -> out_features`` with an activation between layers.

    Args:
        in_features: input size.
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: one of ``relu``, ``elu``, ``gelu``, ``tanh``, ``silu``.
        zero_last: start the last layer at zero, so a layer fed by it starts as the identity.

    Examples:
        >>> import torch
        >>> MLP(3, 2, hidden=(8,))(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        zero_last: bool = True,
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        sizes = [int(in_features), *map(int, hidden), int(out_features)]
        if any(s < 1 for s in sizes):
            raise ValueError(f"layer sizes must be positive; got {sizes}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            if i > 0:
                layers.append(_ACTIVATIONS[activation]())
            layers.append(nn.Linear(a, b))
        super().__init__(*layers)
        if zero_last:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.in_features, self.out_features = sizes[0], sizes[-1]
