"""Cases for the planar layer: every activation, with and without context."""

from flowforge import transforms as T

from . import Case

CASES = {
    "Planar": [
        Case("tanh", lambda: T.Planar(4), (4,), tol=1e-8),
        Case("softplus", lambda: T.Planar(3, activation="softplus"), (3,), tol=1e-8),
        Case("relu", lambda: T.Planar(3, activation="relu"), (3,)),
        Case("leaky-cond", lambda: T.Planar(3, activation="leaky_relu", context_features=2), (3,), context=2),
        Case("tanh-cond", lambda: T.Planar(2, context_features=3, hidden=(8,)), (2,), context=3, tol=1e-8),
    ],
}
