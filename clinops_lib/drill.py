"""Canary and blue-green drills: move real traffic through a :class:`~clinops_lib.target.Target`
while open-loop load flows, judge every analysis interval, and promote or abort.

The engine acts *only* through the ``Target`` interface (deploy, set_canary_weight,
canary_weight, promote, abort, retire, tracks, prometheus_query), so the same drill runs on
the local target, on kind and on any cluster.

Canary (Argo Rollouts form, from ``charts.canary_steps``; default ``10 -> pause -> 50 ->
pause -> 100``): ``setWeight`` moves traffic, ``pause: {duration}`` holds it while the
background analysis runs every interval, ``analysis`` runs ``count`` intervals and needs
them to pass. After the last step one more interval is judged at the final weight: the
drill never promotes on data it has not seen.

Time compression. ``pause_scale`` multiplies every pause *and* the analysis interval, so a
compressed drill keeps the chart's proportions (a pause still spans the same number of
intervals); the scaled interval is floored at ``thresholds.min_interval_s`` because
Prometheus needs a few scrapes per interval. Validation compares the *scaled* pause with the
*scaled* (floored) interval: a pause shorter than one interval would move traffic again
before any verdict, so it is rejected.

Decisions (also written into every result):

* the anytime-valid judge (:mod:`clinops_lib.drills.anytime`) sees every request in send
  order (:mod:`clinops_lib.drills.feed`) and is checked every ``poll_s`` (0.5 s): one
  drill-level e-process over errors and latency bad events at stable's p50/p90/p99, frozen
  from the stable-only warm-up before the first weight step; a bad canary is aborted as soon
  as it reaches ``1/alpha``, with false aborts of an identical release bounded by ``alpha``
  however often it is looked at and across weight changes;
* an interval verdict is Fail, Inconclusive (too few canary requests, metrics without data)
  or Pass; more Fail intervals than ``failure_limit`` aborts; more Inconclusive than
  ``inconclusive_limit`` pauses or aborts (``on_inconclusive``), never promotes;
* faults of the platform abort at once and say why: the canary's process gone, Prometheus
  unreachable (a query error), the traffic layer not answering or not holding the weight.

Abort: all traffic back to stable (``target.abort``) at once; the canary is retired after
``abort_delay_s``. Blue-green: green runs as preview (canary track, weight 0), gets its own
load on ``preview_url`` for the pre-promotion analysis, promotion switches 100 % to it,
post-promotion analysis follows, and during ``scaleDownDelaySeconds`` a rollback drill
switches back to blue and forward again, proving with the per-request records which
version served before and after each switch.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import judge as J
from .drills.anytime import DrillJudge, JudgeSettings
from .drills.feed import JudgeFeed
from .exceptions import ChartError, ClinopsError, DrillError, ParameterError, TargetError
from .faults import FaultProfile
from .loadgen import LoadGenerator, LoadSpec, RequestRecord, default_payloads
from .target import Target

__all__ = [
    "BlueGreenConfig",
    "CanaryConfig",
    "DrillEvent",
    "DrillResult",
    "Outcome",
    "normalize_steps",
    "run_blue_green",
    "run_canary",
    "threshold_overrides",
    "validate_blue_green",
    "validate_canary",
]

Outcome = Literal["PROMOTED", "ABORTED", "PAUSED"]
DEFAULT_STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "30s"}},
    {"setWeight": 50},
    {"pause": {"duration": "30s"}},
    {"setWeight": 100},
]
SERVICE_PATHS = {"clinical-gateway": "/v1/observations", "model-serving": "/v1/predict"}
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
#: Seconds of stable-only traffic before the first weight step; stable's p50/p90/p99 from it become
#: the frozen latency thresholds (600 requests at 200 req/s).
WARMUP_S = 3.0


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CanaryConfig:
    """Everything a canary drill needs; ``validate_canary`` checks it before traffic moves.

    ``steps``: Argo step dicts, or the shorthand list of weights ``[10, 50, 100]`` (a pause of
    ``default_pause`` between them), or empty for the chart's steps.
    """

    service: str
    canary_version: str
    stable_version: str = ""  # "" = whatever runs on stable now
    steps: Sequence[Any] = ()
    pause_scale: float = 0.2
    rate: float = 200.0
    fault: str = "none"
    stable_fault: str = "none"  # a noisy baseline: stable runs with this fault during the drill
    thresholds: J.Thresholds | Mapping[str, Any] | None = None
    on_inconclusive: str = "pause"
    abort_delay_s: float = 2.0
    env: str = "dev"
    poll_s: float = 0.5
    default_pause: str = "30s"
    deploy_timeout_s: float = 60.0
    tail_s: float = 1.5  # load keeps flowing this long after the decision (evidence of where it went)


@dataclass(frozen=True)
class BlueGreenConfig:
    """A blue-green drill: ``green_version`` goes to the canary track as preview."""

    service: str
    green_version: str
    blue_version: str = ""
    pause_scale: float = 0.2
    rate: float = 200.0
    preview_rate: float = 0.0  # 0 = rate / 2
    fault: str = "none"
    stable_fault: str = "none"  # a noisy baseline: blue runs with this fault during the drill
    thresholds: J.Thresholds | Mapping[str, Any] | None = None
    on_inconclusive: str = "pause"
    scale_down_delay_s: float | None = None  # None = from the chart (scaled by pause_scale)
    rollback_drill: bool = True
    abort_delay_s: float = 2.0
    env: str = "dev"
    poll_s: float = 0.5
    deploy_timeout_s: float = 60.0
    tail_s: float = 1.5


@dataclass
class DrillEvent:
    at: float
    kind: str  # deploy, weight, pause, interval, decision, abort, retire, promote, switch, error
    weight: int | None
    detail: str


@dataclass
class DrillResult:
    """Outcome plus everything needed to draw and audit it."""

    kind: Literal["canary", "blue-green"]
    service: str
    stable_version: str
    canary_version: str
    outcome: Outcome
    reason: str
    started_at: float
    decided_at: float
    ended_at: float
    first_canary_traffic_at: float | None
    events: list[DrillEvent]
    intervals: list[J.IntervalVerdict]
    records: list[RequestRecord]
    load: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]]
    interval_s: float
    error_test: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_to_decision(self) -> float | None:
        """From the first canary request to the decision (the detection time of an abort)."""
        if self.first_canary_traffic_at is None:
            return None
        return self.decided_at - self.first_canary_traffic_at

    @property
    def canary_requests_before_decision(self) -> int:
        return sum(1 for r in self.records if r.version == self.canary_version and r.sent <= self.decided_at)

    def interval_rows(self) -> list[dict[str, Any]]:
        return [iv.as_row() for iv in self.intervals]

    def records_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([r.as_dict() for r in self.records])

    def events_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([e.__dict__ for e in self.events])

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "service": self.service,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "outcome": self.outcome,
            "reason": self.reason,
            "seconds_to_decision": self.seconds_to_decision,
            "canary_requests_before_decision": self.canary_requests_before_decision,
            "duration_s": self.ended_at - self.started_at,
            "intervals": len(self.intervals),
            "interval_s": self.interval_s,
            "load": self.load,
            "error_test": self.error_test,
            "checks": self.checks,
        }


# -- validation (before anything moves) ---------------------------------------------------------------
def _check_rate(rate: float, name: str = "rate") -> None:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 1 <= rate <= 2000:
        raise ParameterError(name, f"{rate!r} must be a request rate in 1..2000 per second")


def _check_version(version: str, name: str) -> None:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ParameterError(name, f"{version!r} is not a version (letters, digits, . _ + -; at most 64)")


def _known_services(env: str) -> list[str]:
    from . import charts

    try:
        return list(charts.service_versions(env))
    except ChartError:
        return list(SERVICE_PATHS)


def _thresholds(value: J.Thresholds | Mapping[str, Any] | None, env: str) -> J.Thresholds:
    """Chart thresholds for ``env``, overridden by what the caller passed."""
    from . import charts

    if isinstance(value, J.Thresholds):  # complete already: the chart is not read
        return value.validate()
    try:
        base = J.Thresholds.from_mapping(charts.analysis_thresholds(env))
    except ChartError:
        base = J.Thresholds()
    if value is None:
        return base
    if not isinstance(value, Mapping):
        raise ParameterError("thresholds", f"{value!r} must be a mapping of threshold names to numbers")
    return J.Thresholds.from_mapping(value, base=base)


def threshold_overrides(*, success_rate_min: float = 0.0, p95_latency_max_ms: float = 0.0,
                        alpha: float | None = None) -> dict[str, float]:
    """Runbook parameters turned into overrides of the chart's thresholds.

    Zero means "the chart's AnalysisTemplate value for this environment", so a runbook's
    defaults never copy the chart's numbers and a local rehearsal judges like the cluster.
    """
    out: dict[str, float] = {}
    if success_rate_min:
        out["success_rate_min"] = float(success_rate_min)
    if p95_latency_max_ms:
        out["p95_latency_max_s"] = float(p95_latency_max_ms) / 1000
    if alpha is not None:
        out["alpha"] = float(alpha)
    return out


def scaled_interval(th: J.Thresholds, pause_scale: float) -> float:
    """The analysis interval of a compressed drill: scaled, floored for Prometheus."""
    return max(th.interval_s * pause_scale, th.min_interval_s)


def normalize_steps(
    steps: Sequence[Any], service: str, env: str, default_pause: str = "30s"
) -> list[dict[str, Any]]:
    """Argo step dicts from the parameter (dicts, a list of weights, or empty = the chart's)."""
    from . import charts

    if not steps:
        try:
            return charts.canary_steps(service, env)
        except ChartError:
            return [dict(s) for s in DEFAULT_STEPS]
    if all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        out: list[dict[str, Any]] = []
        for i, w in enumerate(steps):
            if i:
                out.append({"pause": {"duration": default_pause}})
            out.append({"setWeight": w})
        return out
    if not all(isinstance(s, Mapping) for s in steps):
        raise ParameterError("steps", f"{list(steps)!r}: give a list of weights or of Argo step mappings")
    return [dict(s) for s in steps]


def _validate_steps(steps: list[dict[str, Any]], pause_scale: float, interval: float) -> None:
    last = 0
    weights = 0
    for i, step in enumerate(steps):
        if len(step) != 1:
            raise ParameterError("steps", f"step {i} {step!r} must have exactly one key")
        ((key, value),) = step.items()
        if key == "setWeight":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParameterError("steps", f"step {i}: setWeight {value!r} must be an integer percent")
            if not 0 < value <= 100:
                raise ParameterError("steps", f"step {i}: setWeight {value} must be in 1..100")
            if value <= last:
                raise ParameterError(
                    "steps", f"step {i}: setWeight {value} does not increase (previous {last})"
                )
            last = value
            weights += 1
        elif key == "pause":
            if not isinstance(value, Mapping) or "duration" not in value:
                raise ParameterError(
                    "steps",
                    f"step {i}: a pause needs a duration (an indefinite pause "
                    "waits for a human and cannot be drilled)",
                )
            try:
                seconds = J.parse_duration(value["duration"], parameter="steps")
            except ParameterError as e:
                raise ParameterError("steps", f"step {i}: {e}") from e
            scaled = seconds * pause_scale
            if weights == 0:
                raise ParameterError(
                    "steps", f"step {i}: pause before any setWeight judges no canary traffic"
                )
            if scaled + 1e-9 < interval:
                raise ParameterError(
                    "pause_scale" if seconds >= interval else "steps",
                    f"step {i}: pause {value['duration']} x pause_scale {pause_scale:g} = {scaled:.2f}s is "
                    f"shorter than one analysis interval ({interval:.2f}s): no verdict before traffic moves",
                )
        elif key == "analysis":
            if value is not None and not isinstance(value, Mapping):
                raise ParameterError("steps", f"step {i}: analysis must be a mapping")
            if weights == 0:
                raise ParameterError(
                    "steps", f"step {i}: analysis before any setWeight has no canary traffic"
                )
        else:
            raise ParameterError(
                "steps", f"step {i}: unknown step {key!r}; known: setWeight, pause, analysis"
            )
    if weights == 0:
        raise ParameterError("steps", "no setWeight step: the canary would never receive traffic")


def _common_checks(
    service: str,
    env: str,
    pause_scale: float,
    rate: float,
    fault: str,
    on_inconclusive: str,
    abort_delay_s: float,
) -> FaultProfile:
    known = _known_services(env)
    if service not in known:
        raise ParameterError("service", f"unknown service {service!r}; known: {', '.join(known)}")
    if isinstance(pause_scale, bool) or not isinstance(pause_scale, int | float) or not 0 < pause_scale <= 1:
        raise ParameterError("pause_scale", f"{pause_scale!r} must be in (0, 1]")
    _check_rate(rate)
    profile = FaultProfile.parse(fault, parameter="fault")
    if on_inconclusive not in ("pause", "abort"):
        raise ParameterError("on_inconclusive", f"{on_inconclusive!r} must be one of: pause, abort")
    if not 0 <= abort_delay_s <= 600:
        raise ParameterError("abort_delay_s", f"{abort_delay_s!r} must be in 0..600 seconds")
    return profile


def _fault_profiles(cfg: CanaryConfig | BlueGreenConfig) -> FaultProfile:
    """The baseline fault for stable (``stable_fault``); every path a fault names must be one the
    drill's load sends to, or the fault would silently never fire."""
    stable_fault = FaultProfile.parse(cfg.stable_fault, parameter="stable_fault")
    served = {SERVICE_PATHS.get(cfg.service, "/v1/observations")}
    for name, text in (("fault", cfg.fault), ("stable_fault", cfg.stable_fault)):
        unknown = FaultProfile.parse(text, parameter=name).paths - served
        if unknown:
            raise ParameterError(name, f"path {', '.join(sorted(unknown))} receives no drill traffic on "
                                       f"{cfg.service}; it serves {', '.join(sorted(served))}")
    return stable_fault


def _stable_version(target: Target, service: str, wanted: str, name: str) -> str:
    try:
        stable = target.tracks(service)["stable"]
    except TargetError as e:
        raise DrillError(f"cannot read the tracks of {service}: {e}") from e
    if not stable.running:
        raise DrillError(f"{service}: nothing runs on the stable track; bring level 4/1 up first")
    if wanted and wanted != stable.version:
        raise ParameterError(name, f"{wanted!r} is not what runs on stable ({stable.version!r})")
    return stable.version


def _judge_timing(cfg: CanaryConfig | BlueGreenConfig) -> tuple[J.Thresholds, float]:
    """The thresholds in force and the scaled interval; the poll period must fit in one interval."""
    th = _thresholds(cfg.thresholds, cfg.env)
    interval = scaled_interval(th, cfg.pause_scale)
    if not 0.05 <= cfg.poll_s <= interval:
        raise ParameterError("poll_s", f"{cfg.poll_s!r} must be in 0.05..{interval:g} (one interval)")
    return th, interval


@dataclass(frozen=True)
class _Plan:
    steps: list[dict[str, Any]]
    thresholds: J.Thresholds
    interval: float
    fault: FaultProfile
    stable_version: str
    stable_fault: FaultProfile = FaultProfile()


def validate_canary(cfg: CanaryConfig, target: Target | None = None) -> _Plan:
    """Check every parameter; raise :class:`ParameterError` naming the first bad one.

    With a ``target`` also checks the stable version against what runs. Nothing is moved.
    """
    fault = _common_checks(
        cfg.service, cfg.env, cfg.pause_scale, cfg.rate, cfg.fault, cfg.on_inconclusive, cfg.abort_delay_s
    )
    stable_fault = _fault_profiles(cfg)
    _check_version(cfg.canary_version, "canary_version")
    if cfg.stable_version:
        _check_version(cfg.stable_version, "stable_version")
    th, interval = _judge_timing(cfg)
    steps = normalize_steps(cfg.steps, cfg.service, cfg.env, cfg.default_pause)
    _validate_steps(steps, cfg.pause_scale, interval)
    stable = cfg.stable_version
    if target is not None:
        stable = _stable_version(target, cfg.service, cfg.stable_version, "stable_version")
    if stable and stable == cfg.canary_version:
        raise ParameterError(
            "canary_version",
            f"{cfg.canary_version!r} equals the stable version: the judge "
            "tells tracks apart by version (for an A/A drill use e.g. 1.0.0+aa)",
        )
    return _Plan(steps, th, interval, fault, stable, stable_fault)


def validate_blue_green(cfg: BlueGreenConfig, target: Target | None = None) -> tuple[_Plan, float, float]:
    """Like :func:`validate_canary`; also returns (preview rate, scaled scale-down delay)."""
    fault = _common_checks(
        cfg.service, cfg.env, cfg.pause_scale, cfg.rate, cfg.fault, cfg.on_inconclusive, cfg.abort_delay_s
    )
    stable_fault = _fault_profiles(cfg)
    _check_version(cfg.green_version, "green_version")
    if cfg.blue_version:
        _check_version(cfg.blue_version, "blue_version")
    preview_rate = cfg.preview_rate or cfg.rate / 2
    _check_rate(preview_rate, "preview_rate")
    th, interval = _judge_timing(cfg)
    if cfg.scale_down_delay_s is not None:
        delay = float(cfg.scale_down_delay_s)
        if delay < 0:
            raise ParameterError("scale_down_delay_s", f"{delay} must be >= 0")
    else:
        from . import charts

        try:
            delay = float(charts.blue_green(cfg.service, cfg.env)["scale_down_delay_seconds"])
        except ChartError:
            delay = 30.0
        delay *= cfg.pause_scale
    if cfg.rollback_drill and delay < 2 * interval:
        raise ParameterError(
            "scale_down_delay_s",
            f"{delay:.2f}s: the rollback drill needs two analysis "
            f"intervals ({2 * interval:.2f}s) inside the scale-down window",
        )
    blue = cfg.blue_version
    if target is not None:
        blue = _stable_version(target, cfg.service, cfg.blue_version, "blue_version")
    if blue and blue == cfg.green_version:
        raise ParameterError("green_version", f"{cfg.green_version!r} equals the blue version")
    return _Plan([], th, interval, fault, blue, stable_fault), preview_rate, delay


# -- the running drill --------------------------------------------------------------------------------
class _Aborted(Exception):
    """Internal: a decision to stop advancing (abort or pause)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        self.outcome = outcome
        self.reason = reason
        super().__init__(reason)


class _Session:
    """State shared by the canary and blue-green flows: load, records, judge, events."""

    def __init__(
        self,
        target: Target,
        service: str,
        stable: str,
        canary: str,
        plan: _Plan,
        on_inconclusive: str,
        poll_s: float,
        log: Callable[[str], None],
    ) -> None:
        self.target = target
        self.service = service
        self.stable = stable
        self.canary = canary
        self.plan = plan
        self.th = plan.thresholds
        self.on_inconclusive = on_inconclusive
        self.poll_s = poll_s
        self.log = log
        self.path, self.payloads = _payloads(service)
        self.started_at = time.time()
        self.events: list[DrillEvent] = []
        self.intervals: list[J.IntervalVerdict] = []
        self.judge = DrillJudge(JudgeSettings(alpha=self.th.alpha, latency_rho=self.th.latency_rho,
                                              floor_s=self.th.latency_floor_s))
        self.judge_feed = JudgeFeed(self.judge, canary, stable)
        self.gens: list[LoadGenerator] = []
        self._cursor: dict[int, int] = {}
        self.weight = 0
        self.first_canary_at: float | None = None
        self.failed_intervals = 0
        self.inconclusive_intervals = 0
        self.metric_runs = [J.MetricRun(s) for s in self._metric_specs()]
        self.step_name = "start"
        self.expect_weight: int | None = None

    def _metric_specs(self) -> list[J.MetricSpec]:
        from . import charts

        try:
            queries = charts.analysis_queries(self.target.settings.environment, self.service, self.canary)
        except ChartError:
            return []
        return self.th.metric_specs(queries)

    def event(self, kind: str, detail: str, weight: int | None = None) -> None:
        ev = DrillEvent(time.time(), kind, self.weight if weight is None else weight, detail)
        self.events.append(ev)
        self.log(f"[{kind}] {detail}")

    # load
    def start_load(self, url: str, rate: float, label: str) -> LoadGenerator:
        gen = LoadGenerator(
            LoadSpec(
                url=url,
                path=self.path,
                rate=rate,
                label=label,
                payloads=self.payloads,
                max_in_flight=max(64, int(rate)),
            )
        )
        self.judge_feed.open(label)
        gen.start()
        self.gens.append(gen)
        self._cursor[id(gen)] = 0
        return gen

    def stop_gen(self, gen: LoadGenerator) -> None:
        """Stop one load stream; its last answers go to the judge and it holds nothing back after."""
        gen.stop()
        self.feed()
        self.judge_feed.close(gen.spec.label)

    def stop_load(self) -> dict[str, dict[str, Any]]:
        out = {}
        for g in self.gens:
            if g.running:
                g.stop()
            out[g.spec.label] = g.summary().as_dict()
        return out

    def all_records(self) -> list[RequestRecord]:
        recs: list[RequestRecord] = []
        for g in self.gens:
            recs.extend(g.records())
        recs.sort(key=lambda r: r.sent)
        return recs

    def feed(self) -> None:
        """Hand requests completed since the last call to the anytime-valid judge (in send order)."""
        for g in self.gens:
            i = self._cursor[id(g)]
            chunk = g.records_since(i)
            self._cursor[id(g)] = i + len(chunk)
            if self.first_canary_at is None:
                first = [r.sent for r in chunk if r.version == self.canary]
                self.first_canary_at = min(first) if first else None
            self.judge_feed.add(g.spec.label, chunk)
        if self.judge_feed.flush():
            raise _Aborted("ABORTED", self.judge.explain() + self._cs_text())

    def _cs_text(self) -> str:
        cs = self.judge.confidence_sequences()
        d = cs.get("error_rate_difference")
        if not d:
            return ""
        return (f"; error-rate difference {d['estimate'] * 100:+.2f} pp, 95% confidence sequence "
                f"[{d['lo'] * 100:+.2f}, {d['hi'] * 100:+.2f}] pp")

    def warm_up(self, seconds: float) -> None:
        """Stable-only traffic, then freeze the latency thresholds at stable's p50/p90/p99 from it.

        Meanwhile the new version gets a few requests straight on its preview endpoint (not
        judged, not recorded): readiness is not warmth, and a freshly started process answering
        its very first requests slowly is not the regression the judge is there to find.
        """
        warm: LoadGenerator | None = None
        try:
            warm = LoadGenerator(LoadSpec(url=self.target.preview_url(self.service), path=self.path,
                                          rate=50, duration_s=min(2.0, seconds), label="warm-up",
                                          payloads=self.payloads)).start()
        except (ClinopsError, OSError) as e:
            self.event("error", f"could not warm the new version up on its preview endpoint: {e}")
        self.hold(seconds)
        if warm is not None:
            warm.wait(5.0)
        self.feed()
        th = self.judge_feed.freeze(self.th.latency_floor_s)
        if th is None:
            raise _Aborted("ABORTED", "no successful stable request in the warm-up: no latency baseline")
        pairs = zip(th.quantiles, th.thresholds_s, strict=True)
        levels = ", ".join(f"p{q * 100:g} {t * 1000:.1f}" for q, t in pairs)
        self.event("thresholds", "latency thresholds frozen from stable-only warm-up traffic "
                   f"({th.warmup_requests} requests): {levels} ms (stable quantile + {th.floor_s * 1000:g} "
                   "ms floor)")

    def set_share(self, share: float) -> None:
        """The canary's routing share from now on (blue-green: the preview's share of the load)."""
        now = time.time()
        self.judge_feed.set_share(now, now, share)

    # platform health
    def check_platform(self) -> None:
        try:
            tracks = self.target.tracks(self.service)
        except TargetError as e:
            raise _Aborted("ABORTED", f"cannot read the tracks of {self.service}: {e}") from e
        if not tracks["canary"].running:
            raise _Aborted("ABORTED", f"canary {self.canary} is not running any more (process gone)")

    def check_weight(self) -> None:
        if self.expect_weight is None:
            return
        try:
            actual = self.target.canary_weight(self.service)
        except TargetError as e:
            raise _Aborted("ABORTED", f"traffic layer unreachable: {e}") from e
        if actual != self.expect_weight:
            raise _Aborted(
                "ABORTED", f"traffic layer holds canary weight {actual}%, expected {self.expect_weight}%"
            )

    def set_weight(self, w: int) -> None:
        t0 = time.time()
        try:
            self.target.set_canary_weight(self.service, w)
        except TargetError as e:
            raise _Aborted("ABORTED", f"could not set canary weight {w}%: {e}") from e
        self.judge_feed.set_share(t0, time.time(), w / 100)
        self.weight = w
        self.expect_weight = w
        self.event("weight", f"canary weight {w}%", w)

    # intervals
    def run_for(self, seconds: float) -> list[J.IntervalVerdict]:
        """Hold the current state for ``seconds``, judging each interval; return the verdicts."""
        end = time.time() + seconds
        verdicts: list[J.IntervalVerdict] = []
        while time.time() < end - 1e-3:
            length = min(self.plan.interval, end - time.time())
            if length < self.plan.interval * 0.5 and verdicts:
                self.hold(max(0.0, end - time.time()))  # a remainder too short to judge, still watched
                break
            verdicts.append(self.one_interval(length))
        return verdicts

    def hold(self, seconds: float) -> None:
        """Keep the current weights for ``seconds`` watching errors and the platform, without
        judging intervals (used where there is no canary-versus-stable comparison to make)."""
        end = time.time() + seconds
        while (now := time.time()) < end:
            time.sleep(min(self.poll_s, end - now))
            self.feed()
            self.check_platform()
        self.check_weight()

    def one_interval(self, length: float) -> J.IntervalVerdict:
        """Watch one interval of ``length`` seconds, then judge it and decide; an abort
        mid-interval still records the partial interval (as Fail) before propagating."""
        start = time.time()
        end = start + length
        try:
            while True:
                now = time.time()
                if now >= end:
                    break
                time.sleep(min(self.poll_s, end - now))
                self.feed()
                self.check_platform()
            time.sleep(0.05)  # let requests sent just before `end` complete
            self.feed()
            self.check_weight()
        except _Aborted as a:
            # keep the partial interval in the table: the numbers behind the early decision
            iv = self.judge_interval(start, time.time(), query_metrics=False)
            iv.verdict = "Fail"
            iv.reasons.insert(0, f"stopped early: {a.reason}")
            self.intervals.append(iv)
            raise
        iv = self.judge_interval(start, end)
        self.intervals.append(iv)
        self.event(
            "interval",
            f"interval {iv.index} at {iv.weight}%: {iv.verdict}"
            + (f" ({'; '.join(iv.reasons)})" if iv.reasons else ""),
        )
        self.decide(iv)
        return iv

    def judge_interval(self, start: float, end: float, query_metrics: bool = True) -> J.IntervalVerdict:
        recs = [r for r in self.all_records() if start <= r.sent < end]
        canary_recs = [r for r in recs if r.version == self.canary]
        stable_recs = [r for r in recs if r.version == self.stable]
        unattributed = [r for r in recs if r.failed and r.version not in (self.canary, self.stable)]
        reasons: list[str] = []
        verdict: J.Verdict = "Pass"

        def worse(v: J.Verdict, why: str) -> None:
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
        if len(canary_recs) < self.th.min_requests:
            worse("Inconclusive", f"only {len(canary_recs)} canary requests (< {self.th.min_requests})")
        elif canary_recs and c_err / len(canary_recs) > 1 - self.th.success_rate_min:
            worse(
                "Fail", f"canary success rate {1 - c_err / len(canary_recs):.3f} < {self.th.success_rate_min}"
            )
        if self.judge.rejected:
            j = self.judge
            worse("Fail", f"anytime-valid judge rejected (e={j.max_e:.1f} >= {j.threshold:.0f})")
        total = len(recs)
        if total and len(unattributed) / total > 1 - self.th.success_rate_min:
            worse(
                "Fail", f"{len(unattributed)} of {total} requests failed with no version (proxy/connection)"
            )
        prom: dict[str, tuple[float | None, str]] = {}
        for run in self.metric_runs if query_metrics else []:
            m = run.measure(self.target.prometheus_query, end)
            prom[run.spec.name] = (m.value, m.phase)
            if m.phase == "Failed":
                worse("Fail", f"{run.spec.name} = {m.value:.4g} fails {run.spec.success_condition}")
            elif m.phase == "Inconclusive":
                worse("Inconclusive", f"{run.spec.name}: no data")
            elif m.phase == "Error":  # Prometheus unreadable: no data is never a pass
                worse("Inconclusive", f"{run.spec.name}: Prometheus unreadable: {m.message}")
        cs = self.judge.confidence_sequences()
        diff = cs.get("error_rate_difference")
        return J.IntervalVerdict(
            index=len(self.intervals),
            step=self.step_name,
            start=start,
            end=end,
            weight=self.weight,
            verdict=verdict,
            reasons=reasons,
            canary_version=self.canary,
            stable_version=self.stable,
            canary_n=len(canary_recs),
            stable_n=len(stable_recs),
            canary_errors=c_err,
            stable_errors=s_err,
            unattributed_failures=len(unattributed),
            error_e_value=self.judge.e_value,
            error_p_value=self.judge.p_value,
            error_diff=diff["estimate"] if diff else None,
            error_diff_lo=diff["lo"] if diff else None,
            error_diff_hi=diff["hi"] if diff else None,
            canary_p50_s=J.quantile(c_lat, 0.5),
            canary_p95_s=J.quantile(c_lat, 0.95),
            stable_p50_s=J.quantile(s_lat, 0.5),
            stable_p95_s=J.quantile(s_lat, 0.95),
            anytime=cs,
            prometheus=prom,
        )

    def decide(self, iv: J.IntervalVerdict) -> None:
        for run in self.metric_runs:
            if run.phase == "Error":
                raise _Aborted("ABORTED", f"metrics unavailable: {run.measurements[-1].message}")
        if iv.verdict == "Fail":
            self.failed_intervals += 1
        elif iv.verdict == "Inconclusive":
            self.inconclusive_intervals += 1
        if self.failed_intervals > self.th.failure_limit:
            raise _Aborted(
                "ABORTED",
                f"{self.failed_intervals} failed intervals > failureLimit "
                f"{self.th.failure_limit}; last: {'; '.join(iv.reasons)}",
            )
        if self.inconclusive_intervals > self.th.inconclusive_limit:
            outcome: Outcome = "PAUSED" if self.on_inconclusive == "pause" else "ABORTED"
            raise _Aborted(
                outcome,
                f"{self.inconclusive_intervals} inconclusive intervals > inconclusiveLimit "
                f"{self.th.inconclusive_limit}; last: {'; '.join(iv.reasons)}",
            )

    def until_pass(self, max_intervals: int) -> None:
        """Judge intervals until one passes (never promote on data not yet judged a Pass)."""
        for _ in range(max_intervals):
            if self.one_interval(self.plan.interval).verdict == "Pass":
                return
        raise _Aborted(
            "PAUSED" if self.on_inconclusive == "pause" else "ABORTED",
            f"no passing interval in {max_intervals} at the final weight: not promoting without data",
        )

    def error_test_summary(self) -> dict[str, Any]:
        """The anytime-valid judge at the moment of decision, with its confidence sequences."""
        return {**self.judge.summary(), "confidence_sequences": self.judge.confidence_sequences()}


def _noop(_: str) -> None:
    return None


def _payloads(service: str) -> tuple[str, list[bytes]]:
    import scipy.stats  # noqa: F401 - imported now, not inside the first interval's judgement

    path = SERVICE_PATHS.get(service, "/v1/observations")
    return path, default_payloads(path)


def _carry_out(
    s: _Session, outcome: Outcome, reason: str, abort_delay_s: float, promoted: str
) -> tuple[Outcome, str]:
    """Act on the decision: abort, promote (a failed promotion becomes an abort) or stay paused.

    Returns the outcome and reason as they finally stand; ``promoted`` is the promote event's text.
    """
    if outcome == "ABORTED":
        _finish_abort(s, abort_delay_s)
    elif outcome == "PROMOTED":
        try:
            s.target.promote(s.service)
            s.weight = 0
            s.event("promote", promoted, 100)
        except TargetError as e:
            s.event("error", f"promote failed: {e}; aborting")
            outcome, reason = "ABORTED", f"promotion failed: {e}"
            _finish_abort(s, abort_delay_s)
    else:
        s.event("pause", f"PAUSED at {s.weight}%: waiting for a human (promote or abort)")
    return outcome, reason


def _open_session(
    target: Target,
    cfg: CanaryConfig | BlueGreenConfig,
    plan: _Plan,
    canary: str,
    log: Callable[[str], None] | None,
    what: str,
    where: str,
) -> _Session:
    """The common start of both drills: deploy ``canary`` on the canary track, then user load.

    ``what`` names the new version ("canary", "green") and ``where`` its role in the deploy
    event; a failed deploy is a :class:`DrillError` raised before any load was started.
    """
    s = _Session(target, cfg.service, plan.stable_version, canary, plan, cfg.on_inconclusive, cfg.poll_s,
                 log or _noop)
    if not plan.stable_fault.is_none:
        s.event("deploy", f"stable {plan.stable_version} restarted with fault {plan.stable_fault}", 0)
        try:
            target.deploy(cfg.service, plan.stable_version, track="stable", fault=plan.stable_fault,
                          timeout=cfg.deploy_timeout_s)
        except ClinopsError as e:
            raise DrillError(f"could not give stable {plan.stable_version} its baseline fault: {e}") from e
    s.event("deploy", f"deploying {what} {canary} {where} (fault: {plan.fault})", 0)
    try:
        target.deploy(cfg.service, canary, track="canary", fault=plan.fault, timeout=cfg.deploy_timeout_s)
    except ClinopsError as e:
        raise DrillError(f"could not deploy {what} {canary} of {cfg.service}: {e}") from e
    s.start_load(target.service_url(cfg.service), cfg.rate, "user")
    return s


def _clear_stable_fault(s: _Session, outcome: Outcome) -> None:
    """A baseline fault is the drill's, not the platform's: stable runs clean again afterwards
    (after a promotion stable already runs the new version with the canary's fault profile)."""
    if s.plan.stable_fault.is_none or outcome == "PROMOTED":
        return
    try:
        s.target.deploy(s.service, s.stable, track="stable", fault=None)
        s.event("deploy", f"stable {s.stable} restarted without the baseline fault")
    except ClinopsError as e:
        s.event("error", f"could not clear the baseline fault of stable: {e}")


def _finish_abort(s: _Session, abort_delay_s: float) -> None:
    """All traffic back to stable at once; the canary is retired after the abort delay."""
    try:
        s.target.abort(s.service)
        s.weight = 0
        s.expect_weight = 0
        s.event("abort", "all traffic back to stable", 0)
    except TargetError as e:
        s.event("error", f"abort failed: {e}")
    time.sleep(abort_delay_s)
    try:
        s.target.retire(s.service, "canary")
        s.event("retire", f"canary {s.canary} retired")
    except TargetError as e:
        s.event("error", f"retire failed: {e}")


def run_canary(target: Target, cfg: CanaryConfig, *, log: Callable[[str], None] | None = None) -> DrillResult:
    """Run a canary drill end to end and return its result (ABORTED is a result, not an error).

    Raises :class:`ParameterError` (nothing moved) for bad input and :class:`DrillError` when
    the drill cannot start (no stable, canary failed to deploy).
    """
    plan = validate_canary(cfg, target)
    s = _open_session(target, cfg, plan, cfg.canary_version, log, "canary", "on the canary track")
    outcome: Outcome = "PROMOTED"
    reason = "every step passed"
    try:
        s.step_name = "warm-up"
        s.warm_up(WARMUP_S)  # stable-only traffic: the frozen latency thresholds
        for i, step in enumerate(plan.steps):
            ((key, value),) = step.items()
            if key == "setWeight":
                s.step_name = f"{i}:setWeight {value}"
                s.set_weight(int(value))
            elif key == "pause":
                seconds = J.parse_duration(value["duration"]) * cfg.pause_scale
                s.step_name = f"{i}:pause {value['duration']}"
                s.event("pause", f"pause {value['duration']} (scaled {seconds:.1f}s)")
                s.run_for(seconds)
            elif key == "analysis":
                s.step_name = f"{i}:analysis"
                count = int((value or {}).get("count", s.th.count))
                s.event("pause", f"inline analysis: {count} intervals")
                for _ in range(count):
                    s.one_interval(plan.interval)
        s.step_name = "final"
        s.until_pass(s.th.inconclusive_limit + 1)
    except _Aborted as a:
        outcome, reason = a.outcome, a.reason
    except BaseException:
        _finish_abort(s, 0)
        s.stop_load()
        raise
    decided = time.time()
    s.event("decision", f"{outcome}: {reason}")
    promoted = f"{cfg.canary_version} is the new stable"
    outcome, reason = _carry_out(s, outcome, reason, cfg.abort_delay_s, promoted)
    time.sleep(cfg.tail_s)
    load = s.stop_load()
    _clear_stable_fault(s, outcome)
    ended = time.time()
    return DrillResult(
        "canary",
        cfg.service,
        plan.stable_version,
        cfg.canary_version,
        outcome,
        reason,
        s.started_at,
        decided,
        ended,
        s.first_canary_at,
        s.events,
        s.intervals,
        s.all_records(),
        load,
        plan.steps,
        plan.interval,
        s.error_test_summary(),
    )


def run_blue_green(
    target: Target, cfg: BlueGreenConfig, *, log: Callable[[str], None] | None = None
) -> DrillResult:
    """Blue-green drill: preview analysis, switch, post analysis, rollback drill, scale-down."""
    plan, preview_rate, delay = validate_blue_green(cfg, target)
    s = _open_session(target, cfg, plan, cfg.green_version, log, "green", "as preview")
    preview: LoadGenerator | None = None
    s.expect_weight = 0
    outcome: Outcome = "PROMOTED"
    reason = "pre- and post-promotion analysis passed"
    checks: dict[str, Any] = {"scale_down_delay_s": delay}
    switches: list[tuple[str, float, float]] = []

    def switch(weight: int, name: str) -> None:
        t0 = time.time()
        s.set_weight(weight)
        switches.append((name, t0, time.time()))
        s.event("switch", f"{name}: {'green' if weight == 100 else 'blue'} serves all users", weight)

    try:
        s.step_name = "warm-up"
        s.warm_up(WARMUP_S)  # blue only: the frozen latency thresholds
        preview = s.start_load(target.preview_url(cfg.service), preview_rate, "preview")
        s.set_share(preview_rate / (preview_rate + cfg.rate))
        s.step_name = "pre-promotion"
        s.event("pause", f"pre-promotion analysis: {s.th.count} intervals on the preview")
        for _ in range(s.th.count):
            s.one_interval(plan.interval)
        if s.intervals[-1].verdict != "Pass":
            s.until_pass(s.th.inconclusive_limit + 1)
        s.stop_gen(preview)
        s.set_share(0.0)  # no stable traffic to compare with from here on
        s.step_name = "promotion"
        switch(100, "promotion")
        s.step_name = "post-promotion"
        s.event("pause", f"post-promotion analysis: {s.th.count} intervals")
        window_end = time.time() + delay
        for _ in range(s.th.count):
            s.one_interval(plan.interval)
        if cfg.rollback_drill:
            s.step_name = "rollback-drill"
            switch(0, "rollback")
            s.hold(plan.interval)
            switch(100, "roll-forward")
            s.hold(plan.interval)
        s.step_name = "scale-down-delay"
        rest = window_end - time.time()
        if rest > 0:
            s.event("pause", f"scale-down delay: blue kept {rest:.1f}s more for an instant rollback")
            s.hold(rest)
    except _Aborted as a:
        outcome, reason = a.outcome, a.reason
    except BaseException:
        _finish_abort(s, 0)
        s.stop_load()
        raise
    decided = time.time()
    s.event("decision", f"{outcome}: {reason}")
    if preview is not None and preview.running:
        preview.stop()
    promoted = f"green {cfg.green_version} is the new stable; blue scaled down"
    outcome, reason = _carry_out(s, outcome, reason, cfg.abort_delay_s, promoted)
    time.sleep(cfg.tail_s)
    load = s.stop_load()
    _clear_stable_fault(s, outcome)
    ended = time.time()
    records = s.all_records()
    for name, t0, t1 in switches:
        before = [r for r in records if r.label == "user" and t0 - 2 * plan.interval <= r.sent < t0]
        after = [r for r in records if r.label == "user" and t1 < r.sent <= t1 + plan.interval]
        around = [r for r in records if r.label == "user" and t0 - 1.0 <= r.sent <= t1 + 1.0]
        checks[name] = {
            "at": t0,
            "switch_seconds": t1 - t0,
            "versions_before": dict(Counter(r.version or f"<{r.status}>" for r in before)),
            "versions_after": dict(Counter(r.version or f"<{r.status}>" for r in after)),
            "failed_requests_around_switch": sum(1 for r in around if r.failed),
            "requests_around_switch": len(around),
        }
    checks["failed_user_requests_total"] = sum(1 for r in records if r.label == "user" and r.failed)
    res = DrillResult(
        "blue-green",
        cfg.service,
        plan.stable_version,
        cfg.green_version,
        outcome,
        reason,
        s.started_at,
        decided,
        ended,
        s.first_canary_at,
        s.events,
        s.intervals,
        records,
        load,
        [],
        plan.interval,
        s.error_test_summary(),
        checks,
    )
    return res
