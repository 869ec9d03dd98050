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
2. **Errors and latency, canary against stable**: the anytime-valid drill judge of
   :mod:`clinops_lib.drills.anytime` (one e-process over errors and latency bad events at
   stable's frozen p50/p90/p99, tolerance ``latency_rho``, absolute floor
   ``latency_floor_s``), fed every request in send order and checked continuously (the
   engine polls it every half second), so a bad canary is stopped as soon as the evidence is
   there, with false aborts of an identical release bounded by ``alpha`` however often it is
   looked at. Each interval row carries its anytime-valid confidence sequences (error-rate
   and p50/p95/p99 differences) as they stand at the interval's end.
3. **Prometheus unreadable** in an interval makes it Inconclusive: no data is never a pass.

An interval with fewer than ``min_requests`` canary requests is Inconclusive: the drill
never promotes without data.

The verdict is assembled here (:func:`judge_interval`, a pure function of the interval's
records, the drill judge and the metric runs) and the limits across intervals are applied here
(:class:`IntervalLimits`: Argo's ``failureLimit`` / ``inconclusiveLimit`` over the drill's
intervals); the drill session only collects records, asks, and acts on the answer.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..catalog import percentile
from ..exceptions import MetricsError, ParameterError

if TYPE_CHECKING:
    from .anytime import DrillJudge
    from .loadgen import RequestRecord

__all__ = [
    "Condition",
    "Decision",
    "IntervalLimits",
    "IntervalVerdict",
    "Measurement",
    "MetricRun",
    "MetricSpec",
    "Phase",
    "RoutingSplit",
    "Thresholds",
    "judge_interval",
    "parse_duration",
    "routing_split",
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
    alpha: float = 0.01
    latency_rho: float = 0.2
    latency_floor_s: float = 0.005
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
        if not 0 < self.alpha < 1:
            raise bad("alpha", f"{self.alpha} must be in (0, 1)")
        if not 0 <= self.latency_rho <= 10:
            raise bad("latency_rho", f"{self.latency_rho} must be a relative increase in 0..10")
        if not 0 <= self.latency_floor_s <= 10:
            raise bad("latency_floor_s", f"{self.latency_floor_s} must be in 0..10 seconds")
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
            "latencyTolerance": "latency_rho", "latency_tolerance": "latency_rho",
            "latencyFloorSeconds": "latency_floor_s", "latency_floor_seconds": "latency_floor_s",
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
    anytime: dict[str, Any] = field(default_factory=dict)  # confidence sequences at the interval's end
    prometheus: dict[str, tuple[float | None, str]] = field(default_factory=dict)
    #: realized share of the interval's user requests the canary answered, from the complete records
    #: after the drill (None: no split at this weight); see :func:`routing_split`
    canary_share: float | None = None

    def as_row(self) -> dict[str, Any]:
        """One flat row of the interval table (the evidence behind the verdict)."""
        row: dict[str, Any] = {
            "interval": self.index, "step": self.step, "start": self.start, "end": self.end,
            "weight": self.weight, "canary_share": self.canary_share, "verdict": self.verdict,
            "reasons": "; ".join(self.reasons),
            "canary_version": self.canary_version, "stable_version": self.stable_version,
            "canary_requests": self.canary_n, "stable_requests": self.stable_n,
            "canary_errors": self.canary_errors, "stable_errors": self.stable_errors,
            "unattributed_failures": self.unattributed_failures,
            "error_rate_diff": self.error_diff, "error_rate_diff_cs95_lo": self.error_diff_lo,
            "error_rate_diff_cs95_hi": self.error_diff_hi,
            "judge_e_value": self.error_e_value, "judge_p_anytime": self.error_p_value,
            "canary_p50_ms": _ms(self.canary_p50_s), "canary_p95_ms": _ms(self.canary_p95_s),
            "stable_p50_ms": _ms(self.stable_p50_s), "stable_p95_ms": _ms(self.stable_p95_s),
        }
        for q in ("p50", "p95", "p99"):  # anytime-valid confidence sequences, canary minus stable
            cs = self.anytime.get(f"{q}_difference_s") or {}
            row[f"{q}_diff_ms"] = _ms(cs.get("estimate"))
            row[f"{q}_diff_cs95_lo_ms"] = _ms(cs.get("lo"))
            row[f"{q}_diff_cs95_hi_ms"] = _ms(cs.get("hi"))
        for name, (value, phase) in self.prometheus.items():
            row[f"prom_{name}"] = value
            row[f"prom_{name}_phase"] = phase
        return row


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)



def judge_interval(
    records: Sequence[RequestRecord],
    *,
    canary: str,
    stable: str,
    thresholds: Thresholds,
    drill_judge: DrillJudge,
    metric_runs: Sequence[MetricRun] = (),
    query: Callable[[str], float | None] | None = None,
    index: int,
    step: str,
    start: float,
    end: float,
    weight: int,
) -> IntervalVerdict:
    """The verdict of one analysis interval from the requests *sent* in ``[start, end)``.

    Fail: the canary's success rate below ``success_rate_min``; the anytime-valid judge has
    rejected; too many failures no version answered (proxy/connection); a threshold metric
    failed. Inconclusive: fewer than ``min_requests`` canary requests, a metric without data or
    unreadable (never a Pass). ``query`` (``target.prometheus_query``) runs each metric once;
    None skips the metrics (a partial interval cut short by an abort).
    """
    th = thresholds
    recs = [r for r in records if start <= r.sent < end]
    canary_recs = [r for r in recs if r.version == canary]
    stable_recs = [r for r in recs if r.version == stable]
    unattributed = [r for r in recs if r.failed and r.version not in (canary, stable)]
    reasons: list[str] = []
    verdict: Verdict = "Pass"

    def worse(v: Verdict, why: str) -> None:
        nonlocal verdict
        reasons.append(why)
        if v == "Fail" or (v == "Inconclusive" and verdict == "Pass"):
            verdict = v

    # failed requests count as infinitely slow: a canary that turns slow requests into
    # timeouts must not look faster (the quantiles below include them)
    c_lat = [r.latency_s if r.ok else float("inf") for r in canary_recs]
    s_lat = [r.latency_s if r.ok else float("inf") for r in stable_recs]
    c_err = sum(1 for r in canary_recs if r.failed)
    s_err = sum(1 for r in stable_recs if r.failed)
    if len(canary_recs) < th.min_requests:
        worse("Inconclusive", f"only {len(canary_recs)} canary requests (< {th.min_requests})")
    elif canary_recs and c_err / len(canary_recs) > 1 - th.success_rate_min:
        worse("Fail", f"canary success rate {1 - c_err / len(canary_recs):.3f} < {th.success_rate_min}")
    if drill_judge.rejected:
        j = drill_judge
        worse("Fail", f"anytime-valid judge rejected (e={j.max_e:.1f} >= {j.threshold:.0f})")
    total = len(recs)
    if total and len(unattributed) / total > 1 - th.success_rate_min:
        worse("Fail", f"{len(unattributed)} of {total} requests failed with no version (proxy/connection)")
    prom: dict[str, tuple[float | None, str]] = {}
    for run in metric_runs:
        if query is None:  # no metrics backend: the records alone judge
            break
        m = run.measure(query, end)
        prom[run.spec.name] = (m.value, m.phase)
        if m.phase == "Failed":
            worse("Fail", f"{run.spec.name} = {m.value:.4g} fails {run.spec.success_condition}")
        elif m.phase == "Inconclusive":
            worse("Inconclusive", f"{run.spec.name}: no data")
        elif m.phase == "Error":
            # metrics that could not be read are no evidence either way: never a Pass
            worse("Inconclusive", f"{run.spec.name}: metrics could not be read ({m.message})")
    cs = drill_judge.confidence_sequences()
    diff = cs.get("error_rate_difference")
    return IntervalVerdict(
        index=index, step=step, start=start, end=end, weight=weight, verdict=verdict, reasons=reasons,
        canary_version=canary, stable_version=stable,
        canary_n=len(canary_recs), stable_n=len(stable_recs), canary_errors=c_err, stable_errors=s_err,
        unattributed_failures=len(unattributed),
        error_e_value=drill_judge.e_value, error_p_value=drill_judge.p_value,
        error_diff=diff["estimate"] if diff else None,
        error_diff_lo=diff["lo"] if diff else None,
        error_diff_hi=diff["hi"] if diff else None,
        canary_p50_s=percentile(c_lat, 0.5), canary_p95_s=percentile(c_lat, 0.95),
        stable_p50_s=percentile(s_lat, 0.5), stable_p95_s=percentile(s_lat, 0.95),
        anytime=cs, prometheus=prom,
    )


#: An interval's realized split is "off" below this binomial tail probability (two-sided). HAProxy's
#: round robin is far tighter than a coin, so only a real disruption (a server out of rotation)
#: gets there; a coin-routed target (kube-proxy) still passes at 1 in 10^6 per interval.
SPLIT_P_MIN = 1e-6


@dataclass(frozen=True)
class RoutingSplit:
    """Who got the user requests of one interval: ``canary`` of ``n`` at the configured weight."""

    n: int
    canary: int
    weight: int
    p_value: float  # two-sided binomial tail of ``canary`` under Binomial(n, weight/100)


def routing_split(
    records: Sequence[RequestRecord], canary: str, stable: str, weight: int
) -> RoutingSplit | None:
    """The realized canary share of the user requests answered by either version, against the weight.

    Why: every bad event is judged against the routing share in force when it was sent; if the
    proxy sends a different share (a server failing its health checks takes the other one all the
    traffic) the share the judge assumes is wrong and so is its null. None when there is no split to
    check (weight 0 or 100, fewer than 20 requests).

    Only meaningful over *complete* records: a request still in flight has no version yet, so a
    slow side would look under-served. The drill therefore computes it once the load has stopped
    (:func:`~clinops_lib.drills.session._conclude`), as evidence beside each interval, not as a
    verdict taken while requests are in flight.
    """
    if not 0 < weight < 100:
        return None
    versions = [r.version for r in records if r.label == "user" and r.version in (canary, stable)]
    n = len(versions)
    if n < 20:
        return None
    k = sum(1 for v in versions if v == canary)
    from scipy.stats import binom

    p = weight / 100
    tail = 2 * min(float(binom.cdf(k, n, p)), float(binom.sf(k - 1, n, p)))
    return RoutingSplit(n, k, weight, min(1.0, tail))


DecisionOutcome = Literal["ABORTED", "PAUSED"]


@dataclass(frozen=True)
class Decision:
    """Stop advancing: abort, or pause for a human (an inconclusive drill never promotes)."""

    outcome: DecisionOutcome
    reason: str


@dataclass
class IntervalLimits:
    """Argo's limits across the drill's intervals: more than ``failure_limit`` failed intervals
    aborts, more than ``inconclusive_limit`` inconclusive ones pauses (or aborts when the drill
    says ``on_inconclusive="abort"``); a metric run in Error aborts (metrics unavailable)."""

    thresholds: Thresholds
    on_inconclusive: Literal["pause", "abort"] = "pause"
    failed: int = 0
    inconclusive: int = 0

    def add(self, iv: IntervalVerdict, metric_runs: Sequence[MetricRun] = ()) -> Decision | None:
        """Count one judged interval; the decision it forces, if any."""
        for run in metric_runs:
            if run.phase == "Error":
                return Decision("ABORTED", f"metrics unavailable: {run.measurements[-1].message}")
        if iv.verdict == "Fail":
            self.failed += 1
        elif iv.verdict == "Inconclusive":
            self.inconclusive += 1
        why = "; ".join(iv.reasons)
        if self.failed > self.thresholds.failure_limit:
            return Decision("ABORTED", f"{self.failed} failed intervals > failureLimit "
                                       f"{self.thresholds.failure_limit}; last: {why}")
        if self.inconclusive > self.thresholds.inconclusive_limit:
            limit = self.thresholds.inconclusive_limit
            return Decision(self.no_data_outcome, f"{self.inconclusive} inconclusive intervals > "
                                                  f"inconclusiveLimit {limit}; last: {why}")
        return None

    @property
    def no_data_outcome(self) -> DecisionOutcome:
        """What a drill without enough data ends in: PAUSED (a human decides) or ABORTED."""
        return "PAUSED" if self.on_inconclusive == "pause" else "ABORTED"
