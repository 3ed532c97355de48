"""One line a user can act on: does the fit cover the posterior?

The verdict combines what can see dropped mass (defensive importance sampling, reference
draws, disagreeing restarts); PSIS k-hat stays a separate warning, because a fit can have a
good k-hat and still miss half the posterior (U1 with one mode dropped: k-hat 0.56).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .defensive import DefensiveResult
from .multistart import RestartAgreement
from .psis import KHAT_BAD
from .reference import ForwardFit

__all__ = ["Verdict", "verdict"]

COVERS = "fit covers the posterior"
MISSES = "fit misses mass"
DISAGREE = "restarts disagree"
UNCHECKED = "coverage not checked"
MIN_DEFENSIVE_ESS = 100
MAX_MISSING_SE = 0.05


@dataclass
class Verdict:
    """The verdict on a fit.

    Attributes:
        status: ``"covers"``, ``"misses"``, ``"disagree"`` or ``"unchecked"``.
        line: the sentence with the numbers behind it.
        warnings: separate warnings (k-hat above 0.7, an unreliable defensive estimate).
        numbers: the values the verdict used.
    """

    status: str
    line: str
    warnings: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return "\n".join([self.line, *(f"warning: {w}" for w in self.warnings)])


def _where(v: list | None) -> str:
    return "" if v is None else " around (" + ", ".join(f"{x:.2f}" for x in v) + ")"


def verdict(
    *,
    defensive: DefensiveResult | None = None,
    forward: ForwardFit | None = None,
    restarts: RestartAgreement | None = None,
    khat: float | None = None,
    ess_fraction: float | None = None,
    max_missing: float = 0.1,
) -> Verdict:
    """Combine the coverage diagnostics into one verdict line.

    In order: restarts that disagree; an estimated missing mass above ``max_missing`` (from
    defensive IS, or the share of reference draws where the flow's density is negligible);
    otherwise the fit covers the posterior. Without any coverage diagnostic the status is
    ``"unchecked"``. k-hat above 0.7 adds a warning whatever the status.

    Args:
        defensive: from :func:`~flowforge.diagnostics.defensive_is`.
        forward: from :func:`~flowforge.diagnostics.forward_fit` (reference draws).
        restarts: from :func:`~flowforge.diagnostics.restart_agreement`.
        khat: PSIS k-hat of the flow's own importance weights.
        ess_fraction: their effective sample size over the number of draws.
        max_missing: the missing mass above which the fit is flagged.

    Examples:
        >>> v = verdict(khat=0.82)
        >>> v.status, v.line
        ('unchecked', 'coverage not checked (k-hat 0.82): run defensive_is, or compare with reference draws')
        >>> v.warnings[0][:40]
        'PSIS k-hat 0.82 > 0.7: the importance we'
    """
    numbers: dict = {"khat": khat, "ess_fraction": ess_fraction, "max_missing": max_missing}
    warnings = []
    if khat is not None and khat > KHAT_BAD:
        warnings.append(
            f"PSIS k-hat {khat:.2f} > {KHAT_BAD}: the importance weights are unreliable; "
            "the ELBO and reweighted estimates may be far off"
        )
    tail = []
    if khat is not None:
        tail.append(f"k-hat {khat:.2f}")
    if ess_fraction is not None:
        tail.append(f"ESS {100 * ess_fraction:.0f}%")
    missing = []
    if defensive is not None:
        numbers["missing_mass"] = defensive.missing_mass
        numbers["missing_mass_se"] = defensive.missing_mass_se
        missing.append(
            (
                defensive.missing_mass,
                f"estimated {100 * defensive.missing_mass:.0f}% ± {100 * defensive.missing_mass_se:.0f}%"
                f"{_where(defensive.where)}, defensive IS",
            )
        )
        # Not k-hat: when the flow drops a mode, the weights of the draws that find it form a
        # separate cluster that the Pareto fit reads as an infinite tail (k-hat 2-3 on U1), while
        # the estimate itself is sound (0.48 +- 0.03 there). Its ESS and standard error are the
        # honest measures of its precision.
        if defensive.ess < MIN_DEFENSIVE_ESS or defensive.missing_mass_se > MAX_MISSING_SE:
            warnings.append(
                f"the missing-mass estimate is noisy (ESS {defensive.ess:.0f}, standard error "
                f"{100 * defensive.missing_mass_se:.0f}%): use more defensive samples or a better proposal"
            )
    if forward is not None and forward.low_q_share is not None:
        numbers["reference_low_q_share"] = forward.low_q_share
        missing.append(
            (forward.low_q_share, f"{100 * forward.low_q_share:.0f}% of {forward.n} reference draws")
        )
    if restarts is not None:
        numbers["restarts_agree"] = restarts.agree
        numbers["elbo_spread"] = restarts.elbo_spread
    details = "; ".join(tail)

    if restarts is not None and not restarts.agree:
        parts = [f"ELBO spread {restarts.elbo_spread:.3f} over {len(restarts.elbos)} restarts"]
        if restarts.disagreements:
            d = max(restarts.disagreements, key=lambda d: d["share"])
            parts.insert(
                0, f"fit {d['j']} misses {100 * d['share']:.0f}% of fit {d['i']}{_where(d['where'])}"
            )
        parts.append(f"best #{restarts.best} kept")
        line = f"{DISAGREE} ({'; '.join(parts)}{'; ' + details if details else ''})"
        return Verdict("disagree", line, warnings, numbers)
    if missing:
        worst, text = max(missing, key=lambda m: m[0])
        if worst > max_missing:
            return Verdict(
                "misses", f"{MISSES} ({text}{'; ' + details if details else ''})", warnings, numbers
            )
        summary = "; ".join(t for _, t in missing)
        return Verdict(
            "covers",
            f"{COVERS} (missing mass {summary}{'; ' + details if details else ''})",
            warnings,
            numbers,
        )
    details = f" ({details})" if details else ""
    line = f"{UNCHECKED}{details}: run defensive_is, or compare with reference draws"
    return Verdict("unchecked", line, warnings, numbers)
