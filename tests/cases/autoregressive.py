"""Cases for the autoregressive layers: both arrangements, orderings, transformers, contexts."""

from flowforge import transforms as T
from flowforge.transforms.transformers import PiecewiseQuadraticTransformer, RQSplineTransformer

from . import Case, unit

CASES = {
    "Autoregressive": [
        Case(
            "quadratic-unit-maf",
            lambda: T.Autoregressive(PiecewiseQuadraticTransformer(4), 4, hidden=(16,)),
            (4,),
            inputs=unit,
        ),
        Case(
            "spline-iaf-random-cond",
            lambda: T.Autoregressive(
                RQSplineTransformer(5, bound=3.0),
                4,
                one_pass="forward",
                ordering="random",
                seed=3,
                hidden=(16, 16),
                context_features=2,
            ),
            (4,),
            context=2,
        ),
    ],
    "MaskedAffineAutoregressive": [
        Case("natural", lambda: T.MaskedAffineAutoregressive(5, hidden=(16, 16)), (5,)),
        Case("random-init", lambda: T.MaskedAffineAutoregressive(3, hidden=(8,), identity_init=False), (3,)),
        Case("random", lambda: T.MaskedAffineAutoregressive(4, ordering="random", seed=1, hidden=(8,)), (4,)),
        Case(
            "narrow-cond",
            lambda: T.MaskedAffineAutoregressive(6, hidden=(3,), context_features=3),
            (6,),
            context=3,
        ),
        Case(
            "one-feature-cond", lambda: T.MaskedAffineAutoregressive(1, context_features=2), (1,), context=2
        ),
    ],
    "InverseAutoregressive": [
        Case("natural", lambda: T.InverseAutoregressive(5, hidden=(16, 16)), (5,)),
        Case(
            "reverse-cond",
            lambda: T.InverseAutoregressive(4, ordering="reverse", hidden=(16,), context_features=2),
            (4,),
            context=2,
        ),
    ],
    "MaskedSplineAutoregressive": [
        Case("natural", lambda: T.MaskedSplineAutoregressive(3, bins=5, bound=3.0, hidden=(16,)), (3,)),
        Case(
            "scaled-logits",
            lambda: T.MaskedSplineAutoregressive(3, bins=5, logit_scale=0.25, hidden=(16,)),
            (3,),
            perturb=1.0,
        ),
        Case(
            "random-cond",
            lambda: T.MaskedSplineAutoregressive(
                4, ordering="random", seed=2, hidden=(16,), context_features=2
            ),
            (4,),
            context=2,
        ),
    ],
}
