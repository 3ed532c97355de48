"""Cases for the Sylvester layer: the three parameterisations of Q and the activations."""

from flowforge import transforms as T

from . import Case

CASES = {
    "Sylvester": [
        Case("orthogonal", lambda: T.Sylvester(4), (4,), tol=1e-8),
        Case("orthogonal-m2-relu", lambda: T.Sylvester(4, hidden=2, activation="relu"), (4,), tol=1e-8),
        Case("householder", lambda: T.Sylvester(3, kind="householder", reflections=2), (3,), tol=1e-8),
        Case(
            "triangular-flip-softplus",
            lambda: T.Sylvester(3, kind="triangular", flip=True, activation="softplus"),
            (3,),
            tol=1e-8,
        ),
    ],
}
