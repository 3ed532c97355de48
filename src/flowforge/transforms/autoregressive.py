"""Autoregressive layers: MAF, IAF and their spline version, over any transformer (seed 004).

An elementwise bijection ``f`` (a :mod:`transformer <flowforge.transforms.transformers>`)
gets its parameters for feature ``i`` from a :class:`~flowforge.nets.MADE` of the features
before ``i`` in an ordering. With ``u`` on the base side and ``v`` on the data side, the two
arrangements are

- **masked** (MAF): ``u = f(v; theta(v, c))``, so density (inverse) takes one MADE pass;
  sampling (forward) solves ``v_i = f^{-1}(u_i; theta_i(v_{<i}, c))`` feature by feature.
- **inverse** (IAF): ``v = f(u; theta(u, c))``, so sampling (forward) takes one pass; density
  (inverse) solves ``u_i = f^{-1}(v_i; theta_i(u_{<i}, c))`` feature by feature.

The IAF map is exactly the inverse of the MAF map with the same parameters: one machinery,
the roles of the two directions swapped. The one-pass direction always applies ``f`` itself:
for the affine map that puts the shift after the scale on the side the network reads
(``u = v exp(s) + t`` for MAF), which trains markedly faster than shifting first (measured in
``bench/README.md``). Both Jacobians are triangular in the ordering, so ``log|det| = sum_i log|f'|``
in either direction.

The sequential direction is exact, not iterative: it takes one step per dependency level
(``d`` for a full MADE; fewer when narrow hidden layers leave fewer levels), and each step
computes only the hidden units and output rows that no earlier step computed, so the ``d``
steps together do the arithmetic of one MADE pass (:meth:`flowforge.nets.MADE.solve`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..nets import MADE
from .base import Transform
from .transformers import AffineTransformer, RQSplineTransformer, Transformer

__all__ = [
    "Autoregressive",
    "InverseAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedSplineAutoregressive",
]


class Autoregressive(Transform):
    """An autoregressive layer over any transformer: MAF (``one_pass="inverse"``) or IAF (``"forward"``).

    With ``theta = MADE(., c)`` and ``f`` the transformer, forward ``x -> y``:

    - ``one_pass="inverse"`` (masked): inverse ``x = f(y; theta(y))``, forward
      ``y_i = f^{-1}(x_i; theta_i(y_{<i}))``;
    - ``one_pass="forward"`` (inverse autoregressive): forward ``y = f(x; theta(x))``, inverse
      ``x_i = f^{-1}(y_i; theta_i(x_{<i}))``.

    ``log|det dy/dx| = ± sum_i log f'(.; theta_i)`` (the Jacobian is triangular in the
    ordering). The MADE's last layer starts at zero, so a new layer is the identity for every
    built-in transformer. Built with the same arguments and state, the two arrangements are
    each other's inverse.

    Args:
        transformer: the elementwise bijection ``f`` (``flowforge.transforms.transformers``).
        features: the event size ``d``.
        one_pass: the direction that costs one MADE pass, ``"inverse"`` (density: MAF) or
            ``"forward"`` (sampling: IAF).
        context_features: size of the context vector for a conditional layer.
        hidden: the MADE's hidden sizes.
        ordering: ``"natural"``, ``"reverse"``, ``"random"`` (from ``seed``) or a permutation.
        seed: the seed of ``ordering="random"``.
        activation: the MADE's activation.
        identity_init: start the MADE's output layer at zero, so that the layer starts as the
            identity (the default); ``False`` keeps PyTorch's default initialisation
            (``bench/README.md`` has MAF measured both ways).

    Cost: with batch ``B``, width ``h`` and ``P`` parameters per feature, the one-pass
    direction is one MADE pass, ``O(B (d h + h^2 + h d P))``. The other has the same arithmetic
    split into ``L`` sequential steps (``L`` = :attr:`~flowforge.nets.MADE.passes`, ``d`` for a
    full MADE), each a few small operations, plus one addition of the pending pre-activations per
    step and layer, ``O(L B h)``. Under autograd (an IAF trained by maximum likelihood) the memory
    is that of one pass, ``O(B (d + h))`` per layer (see :meth:`~flowforge.nets.MADE.solve`).

    References:
        Germain, Gregor, Murray, Larochelle. "MADE". ICML 2015.
        Papamakarios, Pavlakou, Murray. "Masked Autoregressive Flow for Density Estimation". NeurIPS 2017.
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with
        Inverse Autoregressive Flow". NeurIPS 2016.

    Examples:
        >>> import torch
        >>> from flowforge.transforms.transformers import PiecewiseQuadraticTransformer
        >>> t = Autoregressive(PiecewiseQuadraticTransformer(4, lower=-3.0, upper=3.0), 3, hidden=(16,))
        >>> x = torch.randn(5, 3)
        >>> y, ladj = t(x)
        >>> x2, ladj2 = t.inverse(y)
        >>> ladj.shape, bool(torch.allclose(x2, x, atol=1e-5))
        (torch.Size([5]), True)
    """

    def __init__(
        self,
        transformer: Transformer,
        features: int,
        *,
        one_pass: str = "inverse",
        context_features: int | None = None,
        hidden: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        seed: int = 0,
        activation: str = "relu",
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(transformer, Transformer):
            raise TypeError(f"transformer must be a Transformer; got {type(transformer).__name__}")
        if one_pass not in ("inverse", "forward"):
            raise ValueError(f"one_pass must be 'inverse' (MAF) or 'forward' (IAF); got {one_pass!r}")
        self.transformer = transformer
        if not isinstance(identity_init, bool):
            raise TypeError(f"identity_init must be True or False; got {identity_init!r}")
        self.made = MADE(
            features,
            transformer.n_params,
            hidden=hidden,
            context_features=context_features,
            ordering=ordering,
            seed=seed,
            activation=activation,
            zero_last=identity_init,
        )
        self.event_shape = (self.made.features,)
        self.context_features = self.made.context_features
        self.one_pass = one_pass
        self.cheap_direction = one_pass
        passes = f"closed form, sequential: {self.made.passes} steps (one MADE pass of arithmetic)"
        self.inverse_method = "closed form, one MADE pass" if one_pass == "inverse" else passes

    def extra_repr(self) -> str:
        return f"{self.transformer!r}, one_pass={self.one_pass!r}, {super().extra_repr()}"

    def _parallel(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        params = self.made(v, context)
        v = v.expand(params.shape[:-1])  # the batch shape broadcast with the context's
        out, ladj = self.transformer.forward(v, params)
        return out, ladj.sum(-1)

    def _sequential(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.made.solve(v, self.transformer.inverse, context)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.one_pass == "forward":
            return self._parallel(x, context)
        return self._sequential(x, context)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.one_pass == "inverse":
            return self._parallel(y, context)
        return self._sequential(y, context)


class MaskedAffineAutoregressive(Autoregressive):
    """MAF layer: ``x = y exp(s(y)) + t(y)`` on the way to the base, ``(t_i, s_i) = MADE_i(y_{<i}, c)``.

    Density (inverse, data ``y`` -> base ``x``) in one MADE pass, ``log|det dx/dy| = sum s``.
    Sampling (forward) solves ``y_i = (x_i - t_i) exp(-s_i)`` in :attr:`~flowforge.nets.MADE.passes`
    (``= d``) sequential steps that together cost one MADE pass. This is Papamakarios et al.'s
    ``y_i = x_i exp(a_i) + m_i`` with ``a = -s``, ``m = -t exp(-s)``: the same family, with the
    shift applied after the scale on the density side, which trains faster. The log-scale is softly bounded,
    ``s = B tanh(s_raw / B)`` (``scale_bound=B``; ``None`` for none).

    Cost: density ``O(B (d h + h^2 + 2 h d))``; sampling the same in ``d`` sequential steps.
    Other keyword options as in :class:`Autoregressive`.

    References:
        Papamakarios, Pavlakou, Murray. "Masked Autoregressive Flow for Density Estimation". NeurIPS 2017.

    Examples:
        >>> import torch
        >>> t = MaskedAffineAutoregressive(4, hidden=(32,), context_features=2)
        >>> z, ladj = t.inverse(torch.randn(8, 4), context=torch.randn(8, 2))
        >>> z.shape, ladj.shape
        (torch.Size([8, 4]), torch.Size([8]))
    """

    def __init__(
        self,
        features: int,
        *,
        context_features: int | None = None,
        hidden: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        seed: int = 0,
        activation: str = "relu",
        identity_init: bool = True,
        scale_bound: float | tuple[float, float] | None = 3.0,
    ) -> None:
        super().__init__(
            AffineTransformer(scale_bound=scale_bound),
            features,
            one_pass="inverse",
            context_features=context_features,
            hidden=hidden,
            ordering=ordering,
            seed=seed,
            activation=activation,
            identity_init=identity_init,
        )


class InverseAutoregressive(Autoregressive):
    """IAF layer: sampling (forward) in one MADE pass, density (inverse) in ``d`` sequential steps.

    With the affine default, ``y = x exp(s(x)) + t(x)`` with ``(t_i, s_i) = MADE_i(x_{<i}, c)``,
    ``log|det dy/dx| = sum s``: Kingma et al.'s ``y = mu + sigma x``. The density (inverse) solves
    ``x_i = (y_i - t_i) exp(-s_i)`` feature by feature. An IAF layer is exactly the inverse of a
    :class:`MaskedAffineAutoregressive` with the same state. Any transformer can replace the
    affine map (``transformer=``). Suited to variational inference, where samples and their
    densities come from one forward pass.

    Cost: sampling ``O(B (d h + h^2 + h d P))``; density the same in ``d`` sequential steps.
    Other keyword options as in :class:`Autoregressive`.

    References:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with
        Inverse Autoregressive Flow". NeurIPS 2016.

    Examples:
        >>> import torch
        >>> t = InverseAutoregressive(3, hidden=(16,))
        >>> y, ladj = t(torch.randn(10, 3))
        >>> x, back = t.inverse(y)
        >>> bool(torch.allclose(ladj, -back))
        True
    """

    def __init__(
        self,
        features: int,
        *,
        transformer: Transformer | None = None,
        context_features: int | None = None,
        hidden: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        seed: int = 0,
        activation: str = "relu",
        identity_init: bool = True,
        scale_bound: float | tuple[float, float] | None = 3.0,
    ) -> None:
        super().__init__(
            AffineTransformer(scale_bound=scale_bound) if transformer is None else transformer,
            features,
            one_pass="forward",
            context_features=context_features,
            hidden=hidden,
            ordering=ordering,
            seed=seed,
            activation=activation,
            identity_init=identity_init,
        )


class MaskedSplineAutoregressive(Autoregressive):
    """Autoregressive rational-quadratic spline (NSF, autoregressive variant); MAF arrangement.

    ``x = RQS(y; theta(y, c))`` towards the base, on ``[-bound, bound]`` with ``bins`` bins,
    identity outside (see :class:`~flowforge.transforms.transformers.RQSplineTransformer`);
    density in one MADE pass, sampling (``y_i = RQS^{-1}(x_i; theta_i(y_{<i}, c))``) in ``d``.
    ``3 bins - 1`` parameters per feature; ``logit_scale`` multiplies the bin logits (see the
    transformer).

    Cost: density ``O(B (d h + h^2 + h d K))``; sampling the same in ``d`` sequential steps.
    Other keyword options as in :class:`Autoregressive`.

    References:
        Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows". NeurIPS 2019.

    Examples:
        >>> import torch
        >>> t = MaskedSplineAutoregressive(2, bins=4, bound=3.0, hidden=(16,))
        >>> y, ladj = t(torch.randn(6, 2))
        >>> bool(torch.allclose(t.inverse(y)[1], -ladj, atol=1e-6))
        True
    """

    def __init__(
        self,
        features: int,
        *,
        bins: int = 8,
        bound: float = 5.0,
        min_derivative: float = 1e-3,
        logit_scale: float = 1.0,
        context_features: int | None = None,
        hidden: Sequence[int] = (64, 64),
        ordering: str | Sequence[int] = "natural",
        seed: int = 0,
        activation: str = "relu",
        identity_init: bool = True,
    ) -> None:
        super().__init__(
            RQSplineTransformer(bins, bound=bound, min_derivative=min_derivative, logit_scale=logit_scale),
            features,
            one_pass="inverse",
            context_features=context_features,
            hidden=hidden,
            ordering=ordering,
            seed=seed,
            activation=activation,
            identity_init=identity_init,
        )
