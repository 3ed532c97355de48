"""Cases for the multi-scale pieces: squeeze, factor-out (vector and image), one and two scales."""

from flowforge import transforms as T

from . import Case


def _two_scales(context: int | None = None):
    coarse = T.MultiScale(
        T.AffineCoupling((8, 1, 1), mask="channel", hidden=(8,), context_features=context), (2, 2, 2)
    )
    steps = [
        T.ActNorm(4, event_dim=3),
        T.Invertible1x1Conv(4),
        T.AffineCoupling((4, 2, 2), mask="channel", hidden=(8,), context_features=context),
    ]
    return T.MultiScale(
        steps, (1, 4, 4), inner=coarse, prior="learned", hidden=(8,), context_features=context
    )


CASES = {
    "Squeeze": [
        Case("c2", lambda: T.Squeeze((2, 4, 6)), (2, 4, 6)),
        Case("factor3", lambda: T.Squeeze((1, 3, 3), factor=3), (1, 3, 3)),
    ],
    "Split": [
        Case("vector-base", lambda: T.Split(T.LULinear(3), 5), (5,)),
        Case(
            "vector-learned-cond",
            lambda: T.Split(
                T.Diagonal(2, context_features=2), 4, prior="learned", context_features=2, hidden=(8,)
            ),
            (4,),
            context=2,
        ),
        Case(
            "image-learned",
            lambda: T.Split(T.Invertible1x1Conv(2), (4, 2, 2), prior="learned", hidden=(8,)),
            (4, 2, 2),
        ),
    ],
    "MultiScale": [
        Case("two-scales", _two_scales, (1, 4, 4)),
        Case("two-scales-cond", lambda: _two_scales(context=2), (1, 4, 4), context=2),
        Case("last-scale", lambda: T.MultiScale(T.Invertible1x1Conv(8), (2, 2, 2)), (2, 2, 2)),
    ],
}
