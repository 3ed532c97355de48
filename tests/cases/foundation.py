"""Cases for the core, linear, elementwise and spline layers."""

from flowforge import transforms as T

from . import Case, positive, unit


def _actnorm_init(t):
    import torch

    t.train()
    t.inverse(3 + 2 * torch.randn(64, *t_shape(t), dtype=torch.float64))


def t_shape(t):
    return (t.features,) if t.event_dim == 1 else (t.features, 3, 2)


CASES = {
    "Compose": [
        Case(
            "lu-spline-leaky",
            lambda: T.Compose(T.LULinear(3), T.RationalQuadraticSpline(3, bound=3.0), T.LeakyReLU(0.3)),
            (3,),
        )
    ],
    "Inverse": [
        Case("of-lu", lambda: T.Inverse(T.LULinear(3)), (3,)),
        Case("of-sigmoid", lambda: T.Inverse(T.Sigmoid()), (3,), inputs=unit),
    ],
    "Permutation": [
        Case("random", lambda: T.Permutation(4, seed=1), (4,)),
        Case("reverse", lambda: T.Permutation(4, kind="reverse"), (4,)),
        Case("fixed", lambda: T.Permutation(3, kind="fixed", permutation=[2, 0, 1]), (3,)),
    ],
    "Diagonal": [
        Case("vector", lambda: T.Diagonal(3), (3,)),
        Case("conditional", lambda: T.Diagonal(3, context_features=2), (3,), context=2),
    ],
    "ActNorm": [
        Case("vector", lambda: T.ActNorm(3), (3,), prepare=_actnorm_init),
        Case("image", lambda: T.ActNorm(2, event_dim=3), (2, 3, 2), prepare=_actnorm_init),
    ],
    "LULinear": [
        Case("exp", lambda: T.LULinear(4), (4,)),
        Case("softplus", lambda: T.LULinear(4, positive="softplus", bias=False), (4,)),
    ],
    "TriangularLinear": [
        Case("lower", lambda: T.TriangularLinear(4), (4,)),
        Case("upper", lambda: T.TriangularLinear(4, lower=False), (4,)),
    ],
    "Householder": [Case("k3", lambda: T.Householder(5, reflections=3), (5,))],
    "DenseLinear": [Case("d4", lambda: T.DenseLinear(4), (4,))],
    "Invertible1x1Conv": [
        Case("lu", lambda: T.Invertible1x1Conv(3), (3, 2, 2)),
        Case("full", lambda: T.Invertible1x1Conv(3, lu=False), (3, 2, 2)),
    ],
    "LeakyReLU": [
        Case("a0.2", lambda: T.LeakyReLU(0.2), (3,)),
        Case("image", lambda: T.LeakyReLU(0.5, event_dim=3), (2, 2, 2)),
    ],
    "Exp": [Case("exp", lambda: T.Exp(), (3,))],
    "Sigmoid": [Case("sigmoid", lambda: T.Sigmoid(), (3,))],
    "Logit": [Case("logit", lambda: T.Logit(), (3,), inputs=unit)],
    "Tanh": [Case("tanh", lambda: T.Tanh(), (3,))],
    "Softplus": [Case("softplus", lambda: T.Softplus(), (3,))],
    "Elementwise": [
        Case(
            "affine-cond",
            lambda: T.Elementwise(T.transformers.AffineTransformer(), 3, context_features=2),
            (3,),
            context=2,
        ),
    ],
    "PiecewiseLinear": [
        Case("unit", lambda: T.PiecewiseLinear(3, bins=5), (3,), inputs=unit),
        Case("wide-tails", lambda: T.PiecewiseLinear(3, bins=4, lower=-2.0, upper=2.0), (3,)),
        Case(
            "conditional",
            lambda: T.PiecewiseLinear(2, bins=4, context_features=3),
            (2,),
            context=3,
            inputs=unit,
        ),
    ],
    "PiecewiseQuadratic": [
        Case("unit", lambda: T.PiecewiseQuadratic(3, bins=5), (3,), inputs=unit, perturb=1.0),
        Case("wide", lambda: T.PiecewiseQuadratic(2, bins=3, lower=-3.0, upper=3.0), (2,)),
    ],
    "RationalQuadraticSpline": [
        Case("b8", lambda: T.RationalQuadraticSpline(3, bins=8, bound=2.0), (3,), perturb=1.0),
        Case(
            "scaled-logits",
            lambda: T.RationalQuadraticSpline(3, bins=4, logit_scale=4.0),
            (3,),
            perturb=1.0,
        ),
        Case(
            "conditional",
            lambda: T.RationalQuadraticSpline(2, bins=4, bound=2.0, context_features=2),
            (2,),
            context=2,
        ),
        Case("positive", lambda: T.RationalQuadraticSpline(2, bins=4, bound=1.0), (2,), inputs=positive),
    ],
}
