"""Coupling flow builders: ``NICE``, ``RealNVP`` (vectors, or multi-scale images) and ``Glow``.

Every builder returns a :class:`~flowforge.Flow` over a standard normal whose couplings
start as the identity (zero last conditioner layer). Consecutive couplings use
complementary masks (and Glow mixes channels with 1x1 convolutions), so every entry is
transformed. The image builders stack scales with :class:`~flowforge.transforms.MultiScale`:
each scale squeezes, runs its steps, factors half of the channels out and hands the rest to
the next scale.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..flow import Flow
from ..transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    Diagonal,
    Invertible1x1Conv,
    MultiScale,
    Transform,
)
from ._base import standard_base

__all__ = ["NICE", "Glow", "RealNVP"]


def _positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _image(shape: Sequence[int], levels: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) with positive sizes; got {shape}")
    c, h, w = shape
    if h % 2**levels or w % 2**levels:
        raise ValueError(
            f"{levels} scale(s) halve H and W {levels} time(s): they must be divisible by "
            f"{2**levels}; got {shape}"
        )
    return c, h, w


def NICE(
    features: int,
    *,
    transforms: int = 4,
    hidden: Sequence[int] = (64, 64),
    context_features: int | None = None,
    mask: str = "alternate",
    activation: str = "relu",
    base_df: float | None = None,
) -> Flow:
    """NICE: additive couplings with complementary masks, then a diagonal scaling.

    ``x = C_K ∘ ... ∘ C_1 ∘ S (z)`` with ``S(z) = exp(s) ⊙ z`` (the only volume change:
    ``log|det| = sum s``) and ``C_k`` :class:`~flowforge.transforms.AdditiveCoupling` layers
    whose masks alternate, so every feature is shifted by a network of the others.

    Args:
        features: the data dimension ``d >= 2``.
        transforms: the number of couplings.
        hidden: the conditioners' hidden sizes.
        context_features: size of a context vector for a conditional density ``p(x | c)``.
        mask: the mask kind of the first coupling (``"alternate"``, ``"half"``, ``"random"``).
        activation: the conditioners' activation.
        base_df: degrees of freedom of a Student-t base (``None``: a standard normal). A t base
            gives the flow polynomial tails, which keeps importance weights bounded when the
            target's tails are heavier than Gaussian.

    Cost: one conditioner pass per coupling in either direction.

    References:
        Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation". 2014.

    Examples:
        >>> import torch
        >>> flow = NICE(4, transforms=2, hidden=(16,))
        >>> flow.log_prob(torch.randn(3, 4)).shape
        torch.Size([3])
    """
    d, k = _positive("features", features), _positive("transforms", transforms)
    couplings = [
        AdditiveCoupling(
            d,
            mask=mask,
            flip=bool(i % 2),
            seed=i,
            hidden=hidden,
            context_features=context_features,
            activation=activation,
        )
        for i in range(k)
    ]
    return Flow(standard_base((d,), base_df), [Diagonal(d), *reversed(couplings)])


def _realnvp_scale(
    shape: tuple[int, int, int], level: int, levels: int, couplings: int, prior: str, options: dict
) -> Transform:
    """Generative-order layers of one RealNVP scale and, inside it, the coarser ones."""

    def checkerboard(n: int) -> list[Transform]:
        return [AffineCoupling(shape, mask="checkerboard", flip=bool(i % 2), **options) for i in range(n)]

    if level == levels:
        return Compose(*reversed(checkerboard(couplings + 1)))
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    channel = [
        AffineCoupling(squeezed, mask="channel", flip=bool(i % 2), **options) for i in range(couplings)
    ]
    inner = _realnvp_scale((2 * c, h // 2, w // 2), level + 1, levels, couplings, prior, options)
    scale = MultiScale(
        list(reversed(channel)),
        shape,
        inner=inner,
        prior=prior,
        context_features=options.get("context_features"),
        hidden=options["hidden"],
    )
    return Compose(scale, *reversed(checkerboard(couplings)))


# The largest vector dimension for which RealNVP starts from a random map by default: measured
# better at 2 features, worse or equal at 64; nothing was measured in between.
RANDOM_START_MAX_FEATURES = 8


def RealNVP(
    features: int | None = None,
    *,
    shape: Sequence[int] | None = None,
    transforms: int = 8,
    levels: int = 2,
    hidden: Sequence[int] = (64, 64),
    context_features: int | None = None,
    scale_bound: float | tuple[float, float] | None = (1.0, 3.0),
    prior: str = "base",
    mask: str = "alternate",
    activation: str = "relu",
    base_df: float | None = None,
    shift_first: bool = True,
    identity_init: bool | None = None,
) -> Flow:
    """RealNVP: affine couplings ``y_T = (x_T + t(x_F)) exp(s(x_F))`` with complementary masks.

    Vectors (``features=d``): ``transforms`` :class:`~flowforge.transforms.AffineCoupling`
    layers with MLP conditioners whose masks alternate. Images (``shape=(C, H, W)``): the
    multi-scale architecture of Dinh et al.: per scale, ``transforms`` checkerboard couplings,
    a squeeze, ``transforms`` channel-wise couplings and a factor-out of half the channels
    (evaluated under the base, or a learned Gaussian prior with ``prior="learned"``); the
    last of ``levels`` scales has ``transforms + 1`` checkerboard couplings. Conv ResNet
    conditioners (``hidden`` = channels per residual block). ``log|det| = sum s``.

    Args:
        features: the data dimension (vectors); give this or ``shape``.
        shape: the image shape ``(C, H, W)``, ``H`` and ``W`` divisible by ``2**levels``.
        transforms: couplings (vectors: in all; images: of each kind per scale).
        levels: the number of factor-outs for images.
        hidden: hidden sizes (MLP) or channels per residual block (ResNet) of the conditioners.
        context_features: size of a context vector for a conditional density ``p(x | c)``.
        scale_bound: soft bounds ``(L, U)`` on every log-scale, ``-L < s < U`` (a number ``B``:
            ``(B, B)``; ``None``: none). The default lets the density direction stretch by at
            most ``e`` per coupling (see :class:`~flowforge.transforms.AffineCoupling`), which
            also limits how much the samples can contract: for variational inference of a
            posterior much narrower than the base, ``scale_bound=3.0, shift_first=False`` may
            fit better (centred eight schools, 8 couplings, one seed: ELBO -31.357 against
            -31.377 with the defaults).
        identity_init: start every coupling as the identity (``True``) or from a random map, the
            conditioners at PyTorch's default initialisation (``False``). ``None`` (the default)
            picks the random start for vectors of at most 8 features and the identity for more
            features and for images. On the 2-D density benchmark the random start gave a lower
            mean test NLL on 6 of 7 data sets (3 seeds); on digits (64 features) it was worse
            with half masks (2.73 against 2.59 bits/dim) and within the seeds' spread with
            alternating ones (``bench/README.md``). The threshold between is a guess.
        prior: ``"base"`` or ``"learned"`` for the factored-out halves.
        mask: the mask kind of vector couplings (``"alternate"``, ``"half"``, ``"random"``).
        activation: the conditioners' activation.
        base_df: degrees of freedom of a Student-t base (``None``: a standard normal). A t base
            gives the flow polynomial tails, which keeps importance weights bounded when the
            target's tails are heavier than Gaussian.
        shift_first: the couplings' arrangement, ``y_T = (x_T + t) exp(s)``, or
            ``x_T exp(s) + t`` if ``False`` (see :class:`~flowforge.transforms.AffineCoupling`).

    Cost: one conditioner pass per coupling in either direction.

    References:
        Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP". ICLR 2017.

    Examples:
        >>> import torch
        >>> flow = RealNVP(2, transforms=4, hidden=(16,))
        >>> flow.sample((5,)).shape
        torch.Size([5, 2])
        >>> img = RealNVP(shape=(1, 4, 4), transforms=1, levels=1, hidden=(8,))
        >>> img.log_prob(torch.rand(2, 1, 4, 4)).shape
        torch.Size([2])
    """
    if (features is None) == (shape is None):
        raise ValueError("give features= (vectors) or shape=(C, H, W) (images), not both or neither")
    k = _positive("transforms", transforms)
    options = {"hidden": hidden, "context_features": context_features, "scale_bound": scale_bound}
    options["activation"] = activation
    options["shift_first"] = shift_first
    if identity_init is not None and not isinstance(identity_init, bool):
        raise TypeError(f"identity_init must be True, False or None; got {identity_init!r}")
    if identity_init is None:
        identity_init = features is None or features > RANDOM_START_MAX_FEATURES
    options["identity_init"] = identity_init
    if features is not None:
        d = _positive("features", features)
        couplings = [AffineCoupling(d, mask=mask, flip=bool(i % 2), seed=i, **options) for i in range(k)]
        return Flow(standard_base((d,), base_df), list(reversed(couplings)))
    levels = _positive("levels", levels)
    image = _image(shape, levels)
    return Flow(standard_base(image, base_df), [_realnvp_scale(image, 0, levels, k, prior, options)])


def _glow_scale(
    shape: tuple[int, int, int], level: int, levels: int, steps: int, prior: str, options: dict
) -> Transform:
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    layers: list[Transform] = []
    for _ in range(steps):
        # Generative order; the normalizing direction runs ActNorm, 1x1 conv, coupling.
        layers += [
            AffineCoupling(squeezed, mask="channel", **options),
            Invertible1x1Conv(4 * c),
            ActNorm(4 * c, event_dim=3),
        ]
    inner = None
    if level + 1 < levels:
        inner = _glow_scale((2 * c, h // 2, w // 2), level + 1, levels, steps, prior, options)
    return MultiScale(
        layers,
        shape,
        inner=inner,
        prior=prior if inner is not None else "base",
        context_features=options.get("context_features"),
        hidden=options["hidden"],
    )


def Glow(
    shape: Sequence[int],
    *,
    levels: int = 2,
    steps: int = 8,
    hidden: Sequence[int] = (64, 64),
    context_features: int | None = None,
    scale_bound: float | tuple[float, float] | None = (1.0, 3.0),
    prior: str = "learned",
    activation: str = "relu",
    base_df: float | None = None,
    shift_first: bool = True,
) -> Flow:
    """Glow: multi-scale flow of steps (ActNorm, invertible 1x1 convolution, affine coupling).

    ``levels`` scales; each squeezes ``(C, H, W)`` to ``(4C, H/2, W/2)`` and runs ``steps``
    steps, whose normalizing direction is ActNorm (data-initialised on the first training
    batch), a learned channel mixing :class:`~flowforge.transforms.Invertible1x1Conv` and a
    channel-wise :class:`~flowforge.transforms.AffineCoupling` with a conv ResNet
    conditioner; all scales but the last factor half of the channels out, under a learned
    conditional Gaussian prior (``prior="learned"``, Glow's split prior) or the base.
    Feed data scaled to about unit range (e.g. dequantized to ``[0, 1)``).

    Args:
        shape: the image shape ``(C, H, W)``, ``H`` and ``W`` divisible by ``2**levels``.
        levels: the number of scales.
        steps: steps per scale.
        hidden: channels per residual block of the coupling (and prior) conditioners.
        context_features: size of a context vector for a conditional density ``p(x | c)``.
        scale_bound: soft bounds ``(L, U)`` on the couplings' log-scales, ``-L < s < U`` (a
            number ``B``: ``(B, B)``; see :class:`~flowforge.transforms.AffineCoupling`).
        prior: ``"learned"`` or ``"base"`` for the factored-out halves.
        activation: the conditioners' activation.
        base_df: degrees of freedom of a Student-t base (``None``: a standard normal). A t base
            gives the flow polynomial tails, which keeps importance weights bounded when the
            target's tails are heavier than Gaussian.
        shift_first: the couplings' arrangement, ``y_T = (x_T + t) exp(s)``, or
            ``x_T exp(s) + t`` if ``False`` (see :class:`~flowforge.transforms.AffineCoupling`).

    Cost: per step, a ResNet pass at that scale's resolution plus O(C^2) per pixel for the 1x1
    convolution; the inverse 1x1 convolution solves with the LU factors.

    References:
        Kingma & Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions". 2018.

    Examples:
        >>> import torch
        >>> flow = Glow((1, 8, 8), levels=2, steps=2, hidden=(8,))
        >>> flow.log_prob(torch.rand(3, 1, 8, 8)).shape, flow.sample((2,)).shape
        (torch.Size([3]), torch.Size([2, 1, 8, 8]))
    """
    levels, k = _positive("levels", levels), _positive("steps", steps)
    image = _image(shape, levels)
    options = {"hidden": hidden, "context_features": context_features, "scale_bound": scale_bound}
    options["activation"] = activation
    options["shift_first"] = shift_first
    return Flow(standard_base(image, base_df), [_glow_scale(image, 0, levels, k, prior, options)])
