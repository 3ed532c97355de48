"""A small convolutional ResNet: the conditioner of coupling layers on images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .mlp import _ACTIVATIONS

__all__ = ["ResNet"]


class _Block(nn.Module):
    """``h -> skip(h) + conv(act(conv(act(h))))``, with a 1x1 projection when widths differ."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, activation: str) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            _ACTIVATIONS[activation](),
            nn.Conv2d(c_in, c_out, kernel_size, padding=pad),
            _ACTIVATIONS[activation](),
            nn.Conv2d(c_out, c_out, kernel_size, padding=pad),
        )
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.skip(h) + self.body(h)


class ResNet(nn.Module):
    """``(..., in_channels, H, W) -> (..., out_channels, H, W)``: stem conv, residual blocks, head conv.

    Convolutions keep the spatial size (odd kernels, "same" padding). No batch or layer
    normalisation: a coupling's log-det must not depend on the other images in the batch.
    The head starts at zero (``zero_last``) so that a coupling fed by it starts as the
    identity. Any number of leading batch dimensions, including none.

    Args:
        in_channels: input channels (image channels plus any context channels).
        out_channels: output channels (parameters per pixel).
        hidden: one entry per residual block: its number of channels.
        kernel_size: odd kernel size of every convolution but the 1x1 projections.
        activation: one of ``relu``, ``elu``, ``gelu``, ``tanh``, ``silu``.
        zero_last: start the head at zero.

    Cost: O(H W k^2 sum(hidden^2)) per image.

    References:
        He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition". CVPR 2016.
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.

    Examples:
        >>> import torch
        >>> ResNet(3, 4, hidden=(8, 8))(torch.randn(2, 5, 3, 6, 6)).shape
        torch.Size([2, 5, 4, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        hidden: Sequence[int] = (64, 64),
        kernel_size: int = 3,
        activation: str = "relu",
        zero_last: bool = True,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer; got {kernel_size}")
        widths = [int(h) for h in hidden]
        if not widths or any(w < 1 for w in widths) or in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"channel counts must be positive and hidden non-empty; got in={in_channels}, "
                f"out={out_channels}, hidden={tuple(hidden)}"
            )
        pad = kernel_size // 2
        self.stem = nn.Conv2d(int(in_channels), widths[0], kernel_size, padding=pad)
        self.blocks = nn.Sequential(
            *(_Block(a, b, kernel_size, activation) for a, b in zip([widths[0], *widths[:-1]], widths))
        )
        self.head = nn.Sequential(
            _ACTIVATIONS[activation](), nn.Conv2d(widths[-1], int(out_channels), kernel_size, padding=pad)
        )
        if zero_last:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3:
            raise ValueError(f"ResNet expects (..., C, H, W) inputs; got shape {tuple(x.shape)}")
        batch, event = x.shape[:-3], x.shape[-3:]
        h = x.reshape(-1, *event)
        out = self.head(self.blocks(self.stem(h)))
        return out.reshape(*batch, *out.shape[-3:])
