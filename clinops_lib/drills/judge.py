"""The canary judge: a verdict per analysis interval, with the numbers behind it.

Three kinds of evidence, each reported with its measurements so an auditor can re-derive
every verdict from the interval table:

1. **Threshold metrics with Argo Rollouts semantics** (the same PromQL the chart's
   AnalysisTemplate runs, evaluated through ``target.prometheus_query``): each measurement is
   Successful / Failed / Inconclusive by ``successCondition`` / ``failureCondition``; a metric
   run is Failed when failures > ``failureLimit``, Inconclusive when inconclusives >
   ``inconclusiveLimit``, Error after more than ``consecutiveErrorLimit`` consecutive query
   errors, Successful after ``count`` measurements. No data (``None``/NaN) is Inconclusive:
   no data is never a pass.
2. **Errors, canary against stable**: the anytime-valid sequential test of
   :mod:`clinops_lib.drills.sequential`, fed every request as it completes and checked
   continuously (the engine polls it every half second), so a bad canary is stopped after a
   handful of errors instead of at the end of an interval, with false alarms bounded by
   ``alpha`` however often it is looked at.
3. **Latency, canary against stable**: one-sided Mann-Whitney U (canary slower) per
   interval, as Kayenta does, *and* a minimum effect size on the Hodges-Lehmann shift
   (with its distribution-free confidence interval) so that a statistically clear but
   practically irrelevant difference of a few milliseconds does not abort a release.
   The drill engine also looks between interval ends with alpha spending (see
   :mod:`clinops_lib.drills`), using ``effect_only_if_significant`` to keep each look cheap.

An interval with fewer than ``min_requests`` canary requests is Inconclusive: the drill
never promotes without data.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..exceptions import MetricsError, ParameterError

__all__ = [
    "Condition",
    "IntervalVerdict",
    "LatencyComparison",
    "Measurement",
    "MetricRun",
    "MetricSpec",
    "Phase",
    "Thresholds",
    "compare_latency",
    "parse_duration",
    "quantile",
    "worst_phase",
]

Phase = Literal["Running", "Successful", "Failed", "Inconclusive", "Error"]
Verdict = Literal["Pass", "Fail", "Inconclusive"]
_PHASE_ORDER: dict[str, int] = {"Successful": 0, "Running": 1, "Inconclusive": 2, "Error": 3, "Failed": 4}

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}
_COND = re.compile(r"^\s*result(?:\[0\])?\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$")


def worst_phase(phases: Sequence[str]) -> Phase:
    """The most severe phase (Argo: an AnalysisRun is as bad as its worst metric)."""
    if not phases:
        return "Running"
    worst: Any = max(phases, key=lambda p: _PHASE_ORDER[p])
    return worst  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Condition:
    """An Argo ``successCondition``/``failureCondition`` of the form ``result[0] >= 0.95``."""

    op: str
    value: float

    @classmethod
    def parse(cls, text: str, *, parameter: str = "condition") -> Condition:
        m = _COND.match(text)
        if not m:
            raise ParameterError(parameter, f"cannot parse {text!r}; expected e.g. 'result[0] >= 0.95'")
        return cls(m.group(1), float(m.group(2)))

    def __call__(self, result: float) -> bool:
        return _OPS[self.op](result, self.value)

    def __str__(self) -> str:
        return f"result[0] {self.op} {self.value:g}"


@dataclass(frozen=True)
class MetricSpec:
    """One metric of an AnalysisTemplate (only the fields the judge uses)."""

    name: str
    query: str
    success_condition: Condition | None = None
    failure_condition: Condition | None = None
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    count: int | None = None

    def __post_init__(self) -> None:
        if self.success_condition is None and self.failure_condition is None:
            raise ParameterError(self.name, "a metric needs a successCondition or a failureCondition")
        for fname in ("failure_limit", "inconclusive_limit", "consecutive_error_limit"):
            if getattr(self, fname) < 0:
                raise ParameterError(fname, f"{getattr(self, fname)} must be >= 0 (metric {self.name})")
        if self.count is not None and self.count < 1:
            raise ParameterError("count", f"{self.count} must be >= 1 (metric {self.name})")

    def assess(self, value: float | None) -> Phase:
        """Argo's per-measurement rule: success wins, then failure, else inconclusive."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "Inconclusive"
        ok = self.success_condition(value) if self.success_condition else None
        bad = self.failure_condition(value) if self.failure_condition else None
        if self.success_condition and self.failure_condition:
            if ok and not bad:
                return "Successful"
            if bad:
                return "Failed"
            return "Inconclusive"
        if self.success_condition:
            return "Successful" if ok else "Failed"
        return "Failed" if bad else "Successful"


@dataclass
class Measurement:
    at: float
    value: float | None
    phase: Phase
    message: str = ""


@dataclass
class MetricRun:
    """The measurements of one metric over an analysis run, with Argo's limits applied."""

    spec: MetricSpec
    measurements: list[Measurement] = field(default_factory=list)

    def add(self, value: float | None, at: float) -> Measurement:
        m = Measurement(at, value, self.spec.assess(value))
        self.measurements.append(m)
        return m

    def add_error(self, message: str, at: float) -> Measurement:
        m = Measurement(at, None, "Error", message)
        self.measurements.append(m)
        return m

    def measure(self, query: Callable[[str], float | None], at: float) -> Measurement:
        """Run the metric's query once; a query failure becomes an Error measurement."""
        try:
            return self.add(query(self.spec.query), at)
        except MetricsError as e:
            return self.add_error(str(e), at)

    def count_of(self, phase: str) -> int:
        return sum(1 for m in self.measurements if m.phase == phase)

    @property
    def consecutive_errors(self) -> int:
        n = 0
        for m in reversed(self.measurements):
            if m.phase != "Error":
                break
            n += 1
        return n

    @property
    def phase(self) -> Phase:
        if self.count_of("Failed") > self.spec.failure_limit:
            return "Failed"
        if self.count_of("Inconclusive") > self.spec.inconclusive_limit:
            return "Inconclusive"
        if self.consecutive_errors > self.spec.consecutive_error_limit:
            return "Error"
        done = len([m for m in self.measurements if m.phase != "Error"])
        if self.spec.count is not None and done >= self.spec.count:
            return "Successful"
        return "Running"


@dataclass(frozen=True)
class Thresholds:
    """The judge's limits (Argo-style limits plus the statistical test parameters).

    ``interval_s`` is the unscaled analysis interval; the engine scales it with the drill's
    ``pause_scale`` (floored at ``min_interval_s`` so Prometheus has scraped at least twice).
    """

    success_rate_min: float = 0.95
    p95_latency_max_s: float = 0.5
    interval_s: float = 30.0
    count: int = 3
    failure_limit: int = 0
    inconclusive_limit: int = 1
    consecutive_error_limit: int = 0
    alpha: float = 0.05
    latency_alpha: float = 0.01
    min_latency_effect_s: float = 0.025
    min_requests: int = 20
    min_interval_s: float = 2.0

    def validate(self) -> Thresholds:
        """Reject limits no measurement can meet, naming the parameter."""
        def bad(name: str, msg: str) -> ParameterError:
            return ParameterError(f"thresholds.{name}", msg)

        if not 0 <= self.success_rate_min <= 1:
            raise bad("success_rate_min", f"{self.success_rate_min} is not a rate in 0..1 "
                      "(a success rate above 1 can never be measured)")
        if not self.p95_latency_max_s > 0:
            raise bad("p95_latency_max_s", f"{self.p95_latency_max_s} s: a latency limit must be > 0")
        if not self.interval_s > 0:
            raise bad("interval_s", f"{self.interval_s} must be > 0 seconds")
        if self.count < 1:
            raise bad("count", f"{self.count} must be >= 1")
        for name in ("failure_limit", "inconclusive_limit", "consecutive_error_limit"):
            if getattr(self, name) < 0:
                raise bad(name, f"{getattr(self, name)} must be >= 0")
        for name in ("alpha", "latency_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise bad(name, f"{getattr(self, name)} must be in (0, 1)")
        if self.min_latency_effect_s < 0:
            raise bad("min_latency_effect_s", f"{self.min_latency_effect_s} must be >= 0")
        if self.min_requests < 1:
            raise bad("min_requests", f"{self.min_requests} must be >= 1")
        if not self.min_interval_s > 0:
            raise bad("min_interval_s", f"{self.min_interval_s} must be > 0")
        return self

    def replace(self, **changes: Any) -> Thresholds:
        from dataclasses import replace

        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Thresholds | None = None,
                     parameter: str = "thresholds") -> Thresholds:
        """Build from a mapping using either our names or the chart's/Argo's spellings."""
        aliases = {
            "successRateMin": "success_rate_min", "success_rate": "success_rate_min",
            "success_rate_min": "success_rate_min", "min_success_rate": "success_rate_min",
            "successRate": "success_rate_min",
            "p95LatencyMaxSeconds": "p95_latency_max_s", "latency_p95_max_s": "p95_latency_max_s",
            "p95_latency_max_s": "p95_latency_max_s", "p95_latency_s": "p95_latency_max_s",
            "max_p95_latency_s": "p95_latency_max_s", "p95LatencySeconds": "p95_latency_max_s",
            "p95_latency_max_seconds": "p95_latency_max_s", "latency_p95_max_seconds": "p95_latency_max_s",
            "failureLimit": "failure_limit", "inconclusiveLimit": "inconclusive_limit",
            "consecutiveErrorLimit": "consecutive_error_limit", "count": "count",
            "interval": "interval_s", "interval_s": "interval_s", "interval_seconds": "interval_s",
            "intervalSeconds": "interval_s",
        }
        base = base or cls()
        known = set(base.__dataclass_fields__)
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "interval_text":  # charts.analysis_thresholds repeats the interval as text
                continue
            name = aliases.get(key, key)
            if name not in known:
                raise ParameterError(f"{parameter}.{key}",
                                     f"unknown threshold; known: {', '.join(sorted(known))}")
            if name == "interval_s" and isinstance(value, str):
                value = parse_duration(value, parameter=f"{parameter}.{key}")
            expected = type(getattr(base, name))
            try:
                changes[name] = expected(value)
            except (TypeError, ValueError) as e:
                raise ParameterError(f"{parameter}.{key}", f"{value!r} is not a {expected.__name__}") from e
        return base.replace(**changes).validate()

    def metric_specs(self, queries: Mapping[str, str]) -> list[MetricSpec]:
        """Argo metrics for the chart's queries: success-rate and latency-p95 get our limits."""
        specs: list[MetricSpec] = []
        for name, q in queries.items():
            low = name.lower()
            if "success" in low:
                cond = Condition(">=", self.success_rate_min)
            elif "error" in low:
                cond = Condition("<=", round(1 - self.success_rate_min, 12))
            elif "latency" in low or "p95" in low or "duration" in low:
                cond = Condition("<=", self.p95_latency_max_s)
            else:
                continue
            specs.append(MetricSpec(name, q, success_condition=cond, failure_limit=self.failure_limit,
                                    inconclusive_limit=self.inconclusive_limit,
                                    consecutive_error_limit=self.consecutive_error_limit))
        return specs


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def parse_duration(text: str | float | int, *, parameter: str = "duration") -> float:
    """Argo/Go-style duration (``30s``, ``1m``, ``500ms``, bare number = seconds) in seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ParameterError(parameter, f"{text} must be >= 0")
        return float(text)
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ParameterError(parameter, f"cannot parse duration {text!r}; expected e.g. 30s, 1m, 500ms")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * unit


@dataclass(frozen=True)
class LatencyComparison:
    """Canary versus stable latency over one interval."""

    n_canary: int
    n_stable: int
    p_value: float | None
    shift_s: float | None  # Hodges-Lehmann estimate of canary minus stable
    shift_lo_s: float | None
    shift_hi_s: float | None
    prob_canary_slower: float | None  # common-language effect size U / (n1 n2)
    verdict: Verdict | Literal["n/a"]
    reason: str


def compare_latency(canary: Sequence[float], stable: Sequence[float], *, alpha: float = 0.01,
                    min_effect_s: float = 0.025, min_samples: int = 20, confidence: float = 0.95,
                    max_samples: int = 1000, seed: int = 0,
                    effect_only_if_significant: bool = False) -> LatencyComparison:
    """One-sided Mann-Whitney U (canary slower) plus a minimum Hodges-Lehmann shift.

    Fail needs both: p < ``alpha`` *and* a shift of at least ``min_effect_s``. The shift's
    interval is the distribution-free one from the order statistics of pairwise
    differences (the interval that inverts the Mann-Whitney test).
    """
    from scipy.stats import mannwhitneyu, norm

    n1, n2 = len(canary), len(stable)
    if n1 < min_samples:
        return LatencyComparison(n1, n2, None, None, None, None, None, "Inconclusive",
                                 f"only {n1} canary latencies (< {min_samples})")
    if n2 < min_samples:
        return LatencyComparison(n1, n2, None, None, None, None, None, "n/a",
                                 f"only {n2} stable latencies: no comparison")
    rng = np.random.default_rng(seed)
    a = np.asarray(canary, dtype=float)
    b = np.asarray(stable, dtype=float)
    res = mannwhitneyu(a, b, alternative="greater")
    p = float(res.pvalue)
    cles = float(res.statistic) / (n1 * n2)
    if effect_only_if_significant and p >= alpha:  # a cheap look: the shift only matters if significant
        return LatencyComparison(n1, n2, p, None, None, None, cles, "Pass", f"p={p:.2g} >= {alpha:.2g}")
    a_s = rng.choice(a, max_samples, replace=False) if n1 > max_samples else a
    b_s = rng.choice(b, max_samples, replace=False) if n2 > max_samples else b
    diffs = np.sort(np.subtract.outer(a_s, b_s).ravel())
    m1, m2 = len(a_s), len(b_s)
    shift = float(np.median(diffs))
    z = float(norm.ppf(0.5 + confidence / 2))
    k = int(math.floor(m1 * m2 / 2 - z * math.sqrt(m1 * m2 * (m1 + m2 + 1) / 12)))
    k = max(0, min(k, len(diffs) - 1))
    lo, hi = float(diffs[k]), float(diffs[len(diffs) - 1 - k])
    if p < alpha and shift >= min_effect_s:
        verdict: Verdict = "Fail"
        reason = (f"canary slower: shift {shift * 1000:.1f} ms [{lo * 1000:.1f}, {hi * 1000:.1f}] "
                  f">= {min_effect_s * 1000:.0f} ms, Mann-Whitney p={p:.2g} < {alpha}")
    else:
        verdict = "Pass"
        reason = f"latency shift {shift * 1000:.1f} ms, p={p:.2g}"
    return LatencyComparison(n1, n2, p, shift, lo, hi, cles, verdict, reason)


@dataclass
class IntervalVerdict:
    """Everything measured in one analysis interval and the verdict drawn from it."""

    index: int
    step: str
    start: float
    end: float
    weight: int
    verdict: Verdict
    reasons: list[str]
    canary_version: str
    stable_version: str
    canary_n: int = 0
    stable_n: int = 0
    canary_errors: int = 0
    stable_errors: int = 0
    unattributed_failures: int = 0
    error_e_value: float = 1.0
    error_p_value: float = 1.0
    error_diff: float | None = None
    error_diff_lo: float | None = None
    error_diff_hi: float | None = None
    canary_p50_s: float | None = None
    canary_p95_s: float | None = None
    stable_p50_s: float | None = None
    stable_p95_s: float | None = None
    latency: LatencyComparison | None = None
    prometheus: dict[str, tuple[float | None, str]] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """One flat row of the interval table (the evidence behind the verdict)."""
        row: dict[str, Any] = {
            "interval": self.index, "step": self.step, "start": self.start, "end": self.end,
            "weight": self.weight, "verdict": self.verdict, "reasons": "; ".join(self.reasons),
            "canary_version": self.canary_version, "stable_version": self.stable_version,
            "canary_requests": self.canary_n, "stable_requests": self.stable_n,
            "canary_errors": self.canary_errors, "stable_errors": self.stable_errors,
            "unattributed_failures": self.unattributed_failures,
            "error_rate_diff": self.error_diff, "error_rate_diff_ci_lo": self.error_diff_lo,
            "error_rate_diff_ci_hi": self.error_diff_hi,
            "error_e_value": self.error_e_value, "error_p_anytime": self.error_p_value,
            "canary_p50_ms": _ms(self.canary_p50_s), "canary_p95_ms": _ms(self.canary_p95_s),
            "stable_p50_ms": _ms(self.stable_p50_s), "stable_p95_ms": _ms(self.stable_p95_s),
        }
        lat = self.latency
        row.update({
            "latency_shift_ms": _ms(lat.shift_s) if lat else None,
            "latency_shift_ci_lo_ms": _ms(lat.shift_lo_s) if lat else None,
            "latency_shift_ci_hi_ms": _ms(lat.shift_hi_s) if lat else None,
            "latency_p_mannwhitney": lat.p_value if lat else None,
            "prob_canary_slower": lat.prob_canary_slower if lat else None,
        })
        for name, (value, phase) in self.prometheus.items():
            row[f"prom_{name}"] = value
            row[f"prom_{name}_phase"] = phase
        return row


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(np.asarray(values, dtype=float), q)) if len(values) else None
