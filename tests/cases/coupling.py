"""Cases for the coupling layers: vectors and images, every mask kind, with and without context."""

from flowforge import transforms as T
from flowforge.transforms.transformers import PiecewiseQuadraticTransformer

from . import Case, unit

IMAGE = (2, 4, 4)

CASES = {
    "Coupling": [
        Case(
            "quadratic-unit",
            lambda: T.Coupling(PiecewiseQuadraticTransformer(4), 4, mask="half", hidden=(8,)),
            (4,),
            inputs=unit,
        ),
        Case(
            "explicit-mask-cond",
            lambda: T.Coupling(T.transformers.AffineTransformer(), 3, mask=[0, 1, 1], context_features=2),
            (3,),
            context=2,
        ),
    ],
    "AdditiveCoupling": [
        Case("alternate", lambda: T.AdditiveCoupling(5, hidden=(16,)), (5,)),
        Case(
            "image-channel-mlp", lambda: T.AdditiveCoupling(IMAGE, mask="channel", conditioner="mlp"), IMAGE
        ),
    ],
    "AffineCoupling": [
        Case("half-flip", lambda: T.AffineCoupling(4, mask="half", flip=True, hidden=(16,)), (4,)),
        Case("cond", lambda: T.AffineCoupling(5, mask="random", seed=2, context_features=3), (5,), context=3),
        Case(
            "scale-then-shift-symmetric-bound-cond",
            lambda: T.AffineCoupling(4, shift_first=False, scale_bound=3.0, hidden=(16,), context_features=2),
            (4,),
            context=2,
        ),
        Case("image-checker", lambda: T.AffineCoupling(IMAGE, hidden=(8,)), IMAGE),
        Case("random-init", lambda: T.AffineCoupling(5, identity_init=False, hidden=(16,)), (5,)),
        Case("image-old-arrangement", lambda: T.AffineCoupling(IMAGE, shift_first=False, hidden=(8,)), IMAGE),
        Case(
            "image-channel-cond",
            lambda: T.AffineCoupling(IMAGE, mask="channel", flip=True, hidden=(8, 8), context_features=2),
            IMAGE,
            context=2,
        ),
    ],
    "SplineCoupling": [
        Case("alternate", lambda: T.SplineCoupling(4, bins=5, bound=3.0, hidden=(16,)), (4,)),
        Case("cond", lambda: T.SplineCoupling(3, bins=4, context_features=2), (3,), context=2),
        Case("image", lambda: T.SplineCoupling(IMAGE, bins=4, bound=3.0, flip=True, hidden=(8,)), IMAGE),
        Case(
            "scaled-logits-random-init",
            lambda: T.SplineCoupling(5, bins=6, logit_scale=0.125, identity_init=False, hidden=(16,)),
            (5,),
        ),
    ],
    "LinearAffineCoupling": [
        Case("half", lambda: T.LinearAffineCoupling(6), (6,)),
        Case("flip-cond", lambda: T.LinearAffineCoupling(5, flip=True, context_features=2), (5,), context=2),
    ],
}
