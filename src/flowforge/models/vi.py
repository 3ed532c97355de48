"""The variational-inference flows: planar, radial, Sylvester, Householder and residual.

These families were introduced for variational inference (seeds 000 and 003): a base
sample is pushed forward, and ``Flow.rsample_and_log_prob`` gives the ELBO's terms in one
generative pass. Every layer here also has an exact inverse (closed form or a solver
with a tolerance), so ``Flow.log_prob`` of arbitrary points works too, for density
estimation, importance weighting or checking a fit.

**Base.** All builders use a trainable diagonal Gaussian
(:class:`~flowforge.distributions.DiagNormal`, starting at ``N(0, I)``): in VI the
Gaussian's mean and scales are the cheapest, best-conditioned parameters (mean-field
VI is the zero-layer special case), and the layers only model what it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..distributions import DiagNormal
from ..flow import Flow
from ..transforms import ActNorm, Householder, InvertibleResidual, Planar, Radial, Sylvester, Transform

__all__ = ["HouseholderFlow", "PlanarFlow", "RadialFlow", "ResidualFlow", "SylvesterFlow"]


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _flow(features: int, transforms: list[Transform]) -> Flow:
    return Flow(DiagNormal((features,)), transforms)


def PlanarFlow(
    features: int,
    *,
    layers: int = 16,
    activation: str = "tanh",
    context_features: int | None = None,
) -> Flow:
    """``layers`` planar layers over a trainable diagonal Gaussian (Rezende & Mohamed 2015).

    ``x = f_K o ... o f_1 (z)``, ``f_k(z) = z + u_k h(w_k^T z + b_k)``; see
    :class:`~flowforge.transforms.Planar` for the constraint and the inverse. Seed 003 uses
    depths 10 to 128; seed 000 shows ReLU planar flows are universal in 1-D
    (``flowforge experiment planar-1d``) but need many layers in higher dimensions.

    Args:
        features: dimension ``d``.
        layers: number of planar layers ``K``.
        activation: ``"tanh"``, ``"softplus"``, ``"relu"`` or ``"leaky_relu"``.
        context_features: size of a context vector (layer parameters from hypernetworks).

    Cost: O(K d) per sample to sample; ``log_prob`` adds a root solve per layer for
    smooth activations (closed form for ReLU types).

    References:
        Rezende & Mohamed. "Variational Inference with Normalizing Flows". ICML 2015.

    Examples:
        >>> import torch
        >>> flow = PlanarFlow(2, layers=4)
        >>> x, log_q = flow.rsample_and_log_prob((5,))
        >>> bool(torch.allclose(flow.log_prob(x), log_q, atol=1e-4))
        True
    """
    d, k = _positive("features", features), _positive("layers", layers)
    return _flow(d, [Planar(d, activation=activation, context_features=context_features) for _ in range(k)])


def RadialFlow(features: int, *, layers: int = 16, context_features: int | None = None) -> Flow:
    """``layers`` radial layers over a trainable diagonal Gaussian (Rezende & Mohamed 2015).

    ``f_k(z) = z + beta_k (z - z0_k) / (alpha_k + |z - z0_k|)`` with ``beta_k >= -alpha_k``;
    inverses in closed form (see :class:`~flowforge.transforms.Radial`).

    Args:
        features: dimension ``d``.
        layers: number of radial layers ``K``.
        context_features: size of a context vector (layer parameters from hypernetworks).

    Cost: O(K d) per sample in both directions.

    References:
        Rezende & Mohamed. "Variational Inference with Normalizing Flows". ICML 2015.

    Examples:
        >>> import torch
        >>> flow = RadialFlow(3, layers=4)
        >>> x, log_q = flow.rsample_and_log_prob((5,))
        >>> bool(torch.allclose(flow.log_prob(x), log_q, atol=1e-4))
        True
    """
    d, k = _positive("features", features), _positive("layers", layers)
    return _flow(d, [Radial(d, context_features=context_features) for _ in range(k)])


def SylvesterFlow(
    features: int,
    *,
    layers: int = 8,
    hidden: int | None = None,
    kind: str = "orthogonal",
    activation: str = "tanh",
    reflections: int | None = None,
) -> Flow:
    """``layers`` Sylvester layers over a trainable diagonal Gaussian (van den Berg et al. 2018).

    Each layer is ``z + Q R h(R~ Q^T z + b)`` with ``hidden`` units (default ``d``) and
    ``Q`` orthogonal (``kind="orthogonal"``, O-SNF), a product of reflections
    (``"householder"``, H-SNF) or a permutation (``"triangular"``, T-SNF, alternating the
    identity and the reversal as in the paper); see :class:`~flowforge.transforms.Sylvester`.
    Seed 000's topology matching condition: ``layers * hidden`` hidden units in total bound
    what can be mapped exactly (``flowforge experiment topology``).

    Args:
        features: dimension ``d``.
        layers: number of Sylvester layers.
        hidden: hidden units ``m`` per layer (``m = d`` for triangular).
        kind: ``"orthogonal"``, ``"householder"`` or ``"triangular"``.
        activation: ``"tanh"``, ``"softplus"``, ``"relu"`` or ``"leaky_relu"``.
        reflections: reflections per layer for ``kind="householder"`` (default ``d``).

    Cost: O(layers (d m + m^2)) per sample to sample, plus ``m`` scalar root solves per
    layer for ``log_prob``.

    References:
        van den Berg, Hasenclever, Tomczak, Welling. "Sylvester Normalizing Flows for
        Variational Inference". UAI 2018.

    Examples:
        >>> import torch
        >>> flow = SylvesterFlow(3, layers=2, kind="triangular")
        >>> x, log_q = flow.rsample_and_log_prob((5,))
        >>> bool(torch.allclose(flow.log_prob(x), log_q, atol=1e-4))
        True
    """
    d, k = _positive("features", features), _positive("layers", layers)
    transforms: list[Transform] = []
    for i in range(k):
        if kind == "householder":
            extra = {"reflections": reflections}
        elif kind == "triangular":
            extra = {"flip": i % 2 == 1}
        else:
            extra = {}
        transforms.append(Sylvester(d, hidden=hidden, kind=kind, activation=activation, **extra))
    return _flow(d, transforms)


def HouseholderFlow(
    features: int, *, reflections: int | None = None, planar: int = 0, activation: str = "tanh"
) -> Flow:
    """A trainable diagonal Gaussian rotated by Householder reflections (Tomczak & Welling 2016).

    The existing linear :class:`~flowforge.transforms.Householder` (a product of ``k``
    reflections ``I - 2 v v^T / |v|^2``, log-det 0) is exactly Tomczak & Welling's
    Householder flow, so there is no separate layer. With ``planar=0`` (the default) the
    flow is theirs: ``x = H_k ... H_1 z``, ``z ~ N(mu, diag sigma^2)``, i.e. a
    full-covariance Gaussian ``N(H mu, H diag(sigma^2) H^T)``, every one of which is
    reachable with ``k = d`` reflections: Gaussian VI with correlations at O(k d) per
    sample. In their VAE the reflection vectors came from the encoder; here they are free
    parameters (non-amortised VI). ``planar > 0`` appends that many
    ``Planar`` + ``Householder`` pairs for non-Gaussian posteriors; seed 000 proves depth
    lower bounds for stacks of Householder layers alone, which is why they are paired
    with a nonlinear layer rather than stacked.

    Args:
        features: dimension ``d``.
        reflections: reflections per Householder block (default ``d``).
        planar: number of planar layers, each followed by another Householder block.
        activation: the planar layers' activation.

    Cost: O(k d) per sample per Householder block, O(d) per planar layer (both directions;
    tanh planar inverses add a root solve).

    References:
        Tomczak & Welling. "Improving Variational Auto-Encoders using Householder Flow". 2016.

    Examples:
        >>> import torch
        >>> flow = HouseholderFlow(3)
        >>> x = flow.sample((4,)); flow.log_prob(x).shape
        torch.Size([4])
    """
    d = _positive("features", features)
    k = d if reflections is None else _positive("reflections", reflections)
    n = _positive("planar", planar, minimum=0)
    transforms: list[Transform] = [Householder(d, reflections=k)]
    for _ in range(n):
        transforms += [Planar(d, activation=activation), Householder(d, reflections=k)]
    return _flow(d, transforms)


def ResidualFlow(
    features: int,
    *,
    blocks: int = 4,
    hidden: Sequence[int] = (64, 64),
    lipschitz: float = 0.9,
    activation: str = "lipswish",
    logdet: str = "exact",
    actnorm: bool = True,
    context_features: int | None = None,
) -> Flow:
    """``blocks`` invertible residual blocks (i-ResNet / residual flow) over a diagonal Gaussian.

    Each block is ``z + g(z)`` with ``Lip(g) <= lipschitz`` (see
    :class:`~flowforge.transforms.InvertibleResidual`), preceded by an ``ActNorm`` as in
    Chen et al. (``actnorm=False`` to drop it). Sampling is explicit; ``log_prob`` inverts
    each block by a fixed-point iteration. ``logdet="exact"`` suits small ``d``;
    ``"roulette"`` is Chen et al.'s unbiased estimator for large ``d``.

    Args:
        features: dimension ``d``.
        blocks: number of residual blocks.
        hidden: hidden sizes of each block's network.
        lipschitz: the bound on each ``g``'s Lipschitz constant, in (0, 1).
        activation: ``"lipswish"``, ``"elu"`` or ``"tanh"``.
        logdet: ``"exact"``, ``"series"`` or ``"roulette"``.
        actnorm: put an ``ActNorm`` before each block.
        context_features: size of a context vector fed to every block.

    Cost: per block O(d h + h^2) per sample to sample plus the log-det (O(d^3 + d h^2)
    exact); ``log_prob`` adds ``log(tol) / log(lipschitz)`` fixed-point iterations at worst.

    References:
        Behrmann et al. "Invertible Residual Networks". ICML 2019. Chen et al. "Residual Flows
        for Invertible Generative Modeling". NeurIPS 2019.

    Examples:
        >>> import torch
        >>> flow = ResidualFlow(2, blocks=2, hidden=(16,))
        >>> x, log_q = flow.rsample_and_log_prob((5,))
        >>> bool(torch.allclose(flow.log_prob(x), log_q, atol=1e-4))
        True
    """
    d, k = _positive("features", features), _positive("blocks", blocks)
    transforms: list[Transform] = []
    for _ in range(k):
        if actnorm:
            transforms.append(ActNorm(d))
        transforms.append(
            InvertibleResidual(
                d,
                hidden=hidden,
                lipschitz=lipschitz,
                activation=activation,
                logdet=logdet,
                context_features=context_features,
            )
        )
    return _flow(d, transforms)
