"""Cases for the radial layer, with and without context."""

from flowforge import transforms as T

from . import Case

CASES = {
    "Radial": [
        Case("d3", lambda: T.Radial(3), (3,)),
        Case("d1", lambda: T.Radial(1), (1,)),
        Case("cond", lambda: T.Radial(4, context_features=2, hidden=(8,)), (4,), context=2),
    ],
}
