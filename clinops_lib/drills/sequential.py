"""An anytime-valid sequential test: is the canary's error rate higher than stable's?

Why this test. A fixed-sample test checked again and again as data arrives ("peeking")
raises its false-alarm rate far above its nominal alpha; a canary judge *must* peek, because
the point is to abort as soon as the evidence is there. A test-martingale (e-process) may be
checked after every single request: by Ville's inequality the probability that it *ever*
exceeds ``1/alpha`` under the null hypothesis is at most ``alpha``.

The construction (conditioning on errors: the same idea as the sequential count tests
Netflix described for canaries, Lindon et al. 2022, reduced here to one known-null coin).
Each request goes to the canary with a probability ``w`` fixed by the router (the canary
weight, or the share of load sent to the preview). If both versions fail with the same
probability, then *given* that a request failed, it came from the canary with probability
exactly ``w`` — whatever the common error rate is, so no nuisance parameter has to be
estimated. If the canary fails more often that probability is larger than ``w``. So each
error is a coin flip ``X`` (1 = canary) with known
null mean ``w``, and for every ``c`` in ``(0, 1]``::

    M_n(c) = prod_i (1 + c * (X_i - w_i) / w_i)

is a non-negative (super)martingale under "canary error rate <= stable error rate"
(the factor is ``1 - c >= 0`` for a stable error, ``1 + c(1-w)/w`` for a canary error).
An average of martingales is a martingale, so the mixture over a grid of ``c`` (which
adapts to the unknown effect size) is one too: reject when it reaches ``1/alpha``.

Requests with no attributable version (connection refused, a proxy's 503) carry no
information about which version is worse and are left to the other checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BernoulliErrorSPRT", "newcombe_diff_ci"]

_GRID = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)


@dataclass
class BernoulliErrorSPRT:
    """Mixture e-process on the origin of errors; feed it every attributed request in time order."""

    alpha: float = 0.05
    grid: tuple[float, ...] = _GRID
    log_m: list[float] = field(default_factory=list)
    canary_n: int = 0
    canary_errors: int = 0
    stable_n: int = 0
    stable_errors: int = 0
    max_e: float = 1.0
    rejected_at: int | None = None  # number of canary requests seen when the test rejected

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha {self.alpha} must be in (0, 1)")
        if not self.log_m:
            self.log_m = [0.0] * len(self.grid)

    @property
    def e_value(self) -> float:
        """The current value of the mixture martingale (evidence against 'canary no worse')."""
        return sum(math.exp(v) for v in self.log_m) / len(self.log_m)

    @property
    def p_value(self) -> float:
        """Anytime-valid p-value: 1 / running maximum of the e-process."""
        return min(1.0, 1.0 / self.max_e)

    @property
    def rejected(self) -> bool:
        return self.max_e >= 1.0 / self.alpha

    def observe(self, is_canary: bool, failed: bool, null_share: float) -> bool:
        """Add one request; ``null_share`` is the probability a request goes to the canary
        (known in advance from the router, never estimated from this request). Returns
        whether the test has rejected so far."""
        if is_canary:
            self.canary_n += 1
            self.canary_errors += int(failed)
        else:
            self.stable_n += 1
            self.stable_errors += int(failed)
        if failed and 0.0 < null_share < 1.0:
            w = null_share
            x = 1.0 if is_canary else 0.0
            for i, c in enumerate(self.grid):
                factor = 1.0 + c * (x - w) / w
                self.log_m[i] += math.log(factor) if factor > 0 else -math.inf
            e = self.e_value
            if e > self.max_e:
                self.max_e = e
            if self.rejected and self.rejected_at is None:
                self.rejected_at = self.canary_n
        return self.rejected

    def difference_ci(self, confidence: float = 0.95) -> tuple[float, float, float] | None:
        """Canary minus stable error rate with a Newcombe (Wilson) interval, for display."""
        if not self.canary_n or not self.stable_n:
            return None
        return newcombe_diff_ci(self.canary_errors, self.canary_n, self.stable_errors, self.stable_n,
                                confidence)


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_diff_ci(k1: int, n1: int, k2: int, n2: int,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference p1 - p2 and its Newcombe hybrid score interval (good with zero counts)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = _wilson(k1, n1, z)
    l2, u2 = _wilson(k2, n2, z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lo, hi
