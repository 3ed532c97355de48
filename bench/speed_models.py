"""The models of ``bench/speed.py``: one builder per library, the same architecture in each.

Architectures (issue 9): MAF and IAF with 5 affine autoregressive layers, RealNVP with 6 affine
couplings, NSF with 3 autoregressive rational-quadratic splines (8 bins on ``[-5, 5]``, linear
tails); every conditioner has two hidden layers of ``hidden`` units (ReLU), and fixed
permutations (reversals or swaps) sit between the layers. flowforge's ``models.NSF`` puts
``LULinear`` layers between its splines, which zuko's NSF has not: the speed NSF uses reversals
in every library instead, so that the libraries run the same computation.

Directions follow each library's own conventions; what is timed is the same in all of them:
``log_prob`` of data (the density direction) and ``sample`` (the generative direction).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

LIBRARIES = ("flowforge", "zuko", "nflows", "normflows")
MODELS = ("MAF", "IAF", "RealNVP", "NSF")
LAYERS = {"MAF": 5, "IAF": 5, "RealNVP": 6, "NSF": 3}
BINS, BOUND = 8, 5.0

__all__ = ["BINS", "BOUND", "LAYERS", "LIBRARIES", "MODELS", "Built", "Unavailable", "build", "raw_stack"]


class Unavailable(Exception):
    """A library does not offer a model with the shared architecture (or is not installed)."""


@dataclass
class Built:
    """A model with its two timed entry points."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]


def build(library: str, model: str, d: int, hidden: int) -> Built:
    """Build ``model`` (one of :data:`MODELS`) in ``library`` for ``d`` features."""
    builders = {"flowforge": _flowforge, "zuko": _zuko, "nflows": _nflows, "normflows": _normflows}
    try:
        importlib.import_module(library)
    except ImportError as e:
        raise Unavailable(f"{library} is not importable ({e})") from None
    return builders[library](model, d, hidden)


# -- flowforge -------------------------------------------------------------------------------
def _flowforge(model: str, d: int, hidden: int) -> Built:
    from flowforge import Flow, models
    from flowforge import transforms as T
    from flowforge.distributions import StandardNormal

    h, k = (hidden, hidden), LAYERS[model]
    if model == "MAF":
        flow = models.MAF(d, transforms=k, hidden=h)
    elif model == "IAF":
        flow = models.IAF(d, transforms=k, hidden=h)
    elif model == "RealNVP":
        flow = models.RealNVP(d, transforms=k, hidden=h)
    else:
        layers: list = []
        for i in range(k):
            layers += [T.Permutation(d, kind="reverse")] if i else []
            layers.append(T.MaskedSplineAutoregressive(d, bins=BINS, bound=BOUND, hidden=h))
        flow = Flow(StandardNormal((d,)), layers)
    return Built(flow, flow.log_prob, lambda n: flow.sample((n,)))


def raw_stack(model: str, d: int, hidden: int) -> list[list[tuple[int, int]]]:
    """The (in, out) shapes of every conditioner's linear layers, read off flowforge's model."""
    from flowforge.nets import MADE, MLP

    flow = _flowforge(model, d, hidden).module
    shapes = []
    for m in flow.modules():
        if isinstance(m, MADE):
            shapes.append([(lin.in_features, lin.out_features) for lin in m.layers])
        elif isinstance(m, MLP):
            shapes.append([(lin.in_features, lin.out_features) for lin in m if isinstance(lin, nn.Linear)])
    return shapes


# -- zuko ------------------------------------------------------------------------------------
def _zuko(model: str, d: int, hidden: int) -> Built:
    import zuko

    h, k = (hidden, hidden), LAYERS[model]
    if model == "MAF":
        flow = zuko.flows.MAF(d, transforms=k, hidden_features=h)
    elif model == "IAF":
        # zuko's MAF with each layer inverted: one-pass sampling, sequential density.
        orders = [torch.arange(d) if i % 2 == 0 else torch.arange(d).flip(0) for i in range(k)]
        layers = [zuko.flows.MaskedAutoregressiveTransform(d, order=o, hidden_features=h).inv for o in orders]
        base = zuko.flows.UnconditionalDistribution(
            zuko.distributions.DiagNormal, torch.zeros(d), torch.ones(d), buffer=True
        )
        flow = zuko.flows.Flow(layers, base)
    elif model == "RealNVP":
        flow = zuko.flows.RealNVP(d, transforms=k, hidden_features=h)
    else:
        flow = zuko.flows.NSF(d, transforms=k, bins=BINS, hidden_features=h)
    return Built(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


# -- nflows ----------------------------------------------------------------------------------
class _MLP(nn.Module):
    """Two hidden layers; the conditioner of the peers' couplings (last layer at zero)."""

    def __init__(self, n_in: int, n_out: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _nflows(model: str, d: int, hidden: int) -> Built:
    from nflows import transforms as nt
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.utils import create_alternating_binary_mask

    # nflows' MADE with one non-residual block: initial layer, one hidden-to-hidden layer, output.
    made = {"num_blocks": 1, "use_residual_blocks": False}
    layers: list = []
    for i in range(LAYERS[model]):
        if model != "RealNVP" and i:
            layers.append(nt.ReversePermutation(d))
        if model in ("MAF", "IAF"):
            t = nt.MaskedAffineAutoregressiveTransform(d, hidden, **made)
            layers.append(t if model == "MAF" else nt.InverseTransform(t))
        elif model == "RealNVP":
            mask = create_alternating_binary_mask(d, even=i % 2 == 0)
            layers.append(nt.AffineCouplingTransform(mask, lambda a, b: _MLP(a, b, hidden)))
        else:
            layers.append(
                nt.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    d, hidden, num_bins=BINS, tails="linear", tail_bound=BOUND, **made
                )
            )
    flow = Flow(nt.CompositeTransform(layers), StandardNormal([d]))
    return Built(flow, flow.log_prob, flow.sample)


# -- normflows -------------------------------------------------------------------------------
def _normflows(model: str, d: int, hidden: int) -> Built:
    import normflows as nf
    from normflows.flows.neural_spline.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressive

    made = {"num_blocks": 1, "use_residual_blocks": False}
    layers: list = []
    for _ in range(LAYERS[model]):
        if model in ("MAF", "IAF"):
            # normflows' MaskedAffineAutoregressive samples in one pass (the IAF arrangement);
            # ``Reverse`` swaps its directions into a MAF (one-pass density).
            t = nf.flows.MaskedAffineAutoregressive(d, hidden, **made)
            layers.append(nf.flows.Reverse(t) if model == "MAF" else t)
        elif model == "RealNVP":
            if d < 2:
                raise Unavailable("normflows' coupling needs d >= 2")
            net = nf.nets.MLP([d // 2, hidden, hidden, 2 * (d - d // 2)], init_zeros=True)
            layers.append(nf.flows.AffineCouplingBlock(net))
        else:
            t = MaskedPiecewiseRationalQuadraticAutoregressive(
                d, hidden, num_bins=BINS, tails="linear", tail_bound=BOUND, **made
            )
            layers.append(nf.flows.Reverse(t))  # one-pass density, as the other libraries' NSF
        if d > 1:
            layers.append(nf.flows.Permute(d, mode="swap"))
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), layers)
    return Built(flow, flow.log_prob, lambda n: flow.sample(n)[0])
