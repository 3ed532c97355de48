"""Cases for the invertible residual block: exact log-det (the generic checks are deterministic)."""

from flowforge import transforms as T

from . import Case

CASES = {
    "InvertibleResidual": [
        Case("lipswish", lambda: T.InvertibleResidual(3, hidden=(16, 16)), (3,), tol=1e-8),
        Case(
            "elu-cond",
            lambda: T.InvertibleResidual(2, hidden=(8,), activation="elu", context_features=2),
            (2,),
            context=2,
            tol=1e-8,
        ),
    ],
}
