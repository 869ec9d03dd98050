"""What a drill is asked to do, and its validation before anything moves.

``validate_canary`` / ``validate_blue_green`` check every parameter and raise
:class:`~clinops_lib.exceptions.ParameterError` naming the first bad one; they return the plan
(steps, thresholds in force, scaled interval, parsed fault, stable version) the session runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import catalog
from ..config import Settings
from ..exceptions import ChartError, DrillError, ParameterError, TargetError
from ..faults import FaultProfile
from ..targets.base import Target
from . import judge as J

__all__ = [
    "DEFAULT_STEPS",
    "BlueGreenConfig",
    "CanaryConfig",
    "blue_green_config_from_parameters",
    "canary_config_from_parameters",
    "drill_version",
    "normalize_steps",
    "scaled_interval",
    "threshold_overrides",
    "validate_blue_green",
    "validate_blue_green_parameters",
    "validate_canary",
    "validate_canary_parameters",
]

DEFAULT_STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "30s"}},
    {"setWeight": 50},
    {"pause": {"duration": "30s"}},
    {"setWeight": 100},
]
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
    #: 0 = rate / 2: the preview then carries half the active's load, too unequal for the judge to
    #: compare latency (drills/anytime.py); ``preview_rate = rate`` compares it at equal load
    preview_rate: float = 0.0
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
    #: None = the chart's ``autoPromotionEnabled`` for ``env``. False: stop after the
    #: pre-promotion analysis (AWAITING_APPROVAL, green left running as preview);
    #: :func:`~clinops_lib.drills.bluegreen.promote_blue_green` continues after a signed approval.
    auto_promotion: bool | None = None


def auto_promotion_enabled(cfg: BlueGreenConfig) -> bool:
    """Whether this drill promotes by itself: the config, else the chart's value for ``env``."""
    if cfg.auto_promotion is not None:
        return cfg.auto_promotion
    from .. import charts

    try:
        return bool(charts.blue_green(cfg.service, cfg.env)["auto_promotion_enabled"])
    except ChartError:
        return cfg.env != "prod"  # no chart: production is promoted by hand


# -- validation (before anything moves) ---------------------------------------------------------------
def _check_rate(rate: float, name: str = "rate") -> None:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 1 <= rate <= 2000:
        raise ParameterError(name, f"{rate!r} must be a request rate in 1..2000 per second")


def _thresholds(value: J.Thresholds | Mapping[str, Any] | None, env: str) -> J.Thresholds:
    """Chart thresholds for ``env``, overridden by what the caller passed."""
    from .. import charts

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
    steps: Sequence[Any], service: str, env: str, default_pause: str = "30s",
    profiles: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Argo step dicts from the parameter (dicts, a list of weights, or empty = the chart's, with
    the values ``profiles`` the target's cluster is deployed with: its Rollout carries those)."""
    from .. import charts

    if not steps:
        try:
            return charts.canary_steps(service, env, profiles=profiles)
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
    catalog.service(service)
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
    served = {catalog.service(cfg.service).path}
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
    catalog.check_version(cfg.canary_version, "canary_version")
    if cfg.stable_version:
        catalog.check_version(cfg.stable_version, "stable_version")
    th, interval = _judge_timing(cfg)
    profiles = target.chart_profiles if target is not None else ()
    steps = normalize_steps(cfg.steps, cfg.service, cfg.env, cfg.default_pause, profiles)
    _validate_steps(steps, cfg.pause_scale, interval)
    stable = cfg.stable_version
    if target is not None:
        stable = _stable_version(target, cfg.service, cfg.stable_version, "stable_version")
    if stable and stable == cfg.canary_version:
        raise ParameterError(
            "canary_version",
            f"{cfg.canary_version!r} equals the stable version: the judge "
            "tells tracks apart by version (for an A/A drill use e.g. 1.0.0-aa)",
        )
    return _Plan(steps, th, interval, fault, stable, stable_fault)


def validate_blue_green(cfg: BlueGreenConfig, target: Target | None = None) -> tuple[_Plan, float, float]:
    """Like :func:`validate_canary`; also returns (preview rate, scaled scale-down delay)."""
    fault = _common_checks(
        cfg.service, cfg.env, cfg.pause_scale, cfg.rate, cfg.fault, cfg.on_inconclusive, cfg.abort_delay_s
    )
    stable_fault = _fault_profiles(cfg)
    catalog.check_version(cfg.green_version, "green_version")
    if cfg.blue_version:
        catalog.check_version(cfg.blue_version, "blue_version")
    preview_rate = cfg.preview_rate or cfg.rate / 2
    _check_rate(preview_rate, "preview_rate")
    th, interval = _judge_timing(cfg)
    if cfg.scale_down_delay_s is not None:
        delay = float(cfg.scale_down_delay_s)
        if delay < 0:
            raise ParameterError("scale_down_delay_s", f"{delay} must be >= 0")
    else:
        from .. import charts

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


# -- from a runbook's parameters ------------------------------------------------------------------------
# The runbooks build their drill from their parameters cell with these, and the runner calls the
# validators before a kernel starts (runbook metadata ``clinops.validate``): a rule that spans
# several parameters (a pause versus the analysis interval, the blue-green window) is checked
# once, by the same code, before anything runs.
def drill_version(service: str, env: str, now: float | None = None) -> str:
    """The chart's version of ``service`` with a ``-drill<time>`` suffix: distinct from stable."""
    import time

    from .. import charts

    return f"{charts.service_versions(env)[service]}-drill{int(time.time() if now is None else now)}"


def _thresholds_from(p: Mapping[str, Any]) -> dict[str, Any]:
    return threshold_overrides(success_rate_min=p.get("success_rate_min", 0.0),
                               p95_latency_max_ms=p.get("p95_latency_max_ms", 0), alpha=p.get("alpha"))


def canary_config_from_parameters(p: Mapping[str, Any], env: str) -> CanaryConfig:
    """The canary drill 02-canary-drill runs, from its parameters (empty canary_version: a drill version)."""
    return CanaryConfig(
        service=p["service"], canary_version=p.get("canary_version") or drill_version(p["service"], env),
        stable_version=p.get("stable_version", ""), steps=p.get("steps", ()), pause_scale=p["pause_scale"],
        rate=p["rate"], fault=p.get("fault", "none"), stable_fault=p.get("stable_fault", "none"),
        on_inconclusive=p.get("on_inconclusive", "pause"),
        env=env, thresholds=_thresholds_from(p),
    )


def blue_green_config_from_parameters(p: Mapping[str, Any], env: str) -> BlueGreenConfig:
    """The blue-green drill 03-blue-green-drill runs, from its parameters."""
    return BlueGreenConfig(
        service=p["service"], green_version=p.get("green_version") or drill_version(p["service"], env),
        blue_version=p.get("blue_version", ""), pause_scale=p["pause_scale"], rate=p["rate"],
        fault=p.get("fault", "none"), stable_fault=p.get("stable_fault", "none"),
        rollback_drill=p.get("rollback_drill", True),
        on_inconclusive=p.get("on_inconclusive", "pause"), env=env, thresholds=_thresholds_from(p),
    )


def validate_canary_parameters(p: Mapping[str, Any], settings: Settings) -> None:
    """Runner hook (before a kernel starts): the canary drill these parameters describe is valid."""
    validate_canary(canary_config_from_parameters(p, settings.environment))


def validate_blue_green_parameters(p: Mapping[str, Any], settings: Settings) -> None:
    """Runner hook: the blue-green drill is valid; a scale-down window from the chart that the
    rollback drill does not fit in is the fault of ``pause_scale`` (the knob the runbook has)."""
    try:
        validate_blue_green(blue_green_config_from_parameters(p, settings.environment))
    except ParameterError as e:
        if e.name == "scale_down_delay_s":
            why = str(e).partition(": ")[2]
            raise ParameterError(
                "pause_scale", f"{p['pause_scale']!r} scales the chart's scale-down window too short: {why}"
            ) from e
        raise
