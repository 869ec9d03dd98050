"""The canary drill: Argo Rollouts steps (setWeight / pause / analysis) judged every interval."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..targets.base import Target
from . import judge as J
from .anytime import JudgeSettings
from .config import WARMUP_S, CanaryConfig, validate_canary
from .result import DrillResult
from .session import _conclude, _decide, _open_session

__all__ = ["run_canary"]


def _comparable_seconds(
    steps: list[dict[str, Any]], pause_scale: float, settings: JudgeSettings
) -> float | None:
    """Seconds the plan's pauses hold a comparable share after it settled (None: an analysis step's
    length depends on its verdicts, so the total is not known in advance)."""
    total, share = 0.0, 0.0
    for step in steps:
        ((key, value),) = step.items()
        if key == "setWeight":
            share = int(value) / 100
        elif key == "pause" and bool(settings.latency_comparable(share)):
            total += max(0.0, J.parse_duration(value["duration"]) * pause_scale - settings.latency_settle_s)
        elif key == "analysis" and bool(settings.latency_comparable(share)):
            return None
    return total


def run_canary(target: Target, cfg: CanaryConfig, *, log: Callable[[str], None] | None = None) -> DrillResult:
    """Run a canary drill end to end and return its result (ABORTED is a result, not an error).

    Raises :class:`ParameterError` (nothing moved) for bad input and :class:`DrillError` when
    the drill cannot start (no stable, canary failed to deploy).
    """
    plan = validate_canary(cfg, target)
    s = _open_session(target, cfg, plan, cfg.canary_version, log, "canary", "on the canary track")

    def steps() -> None:
        s.step_name = "warm-up"
        s.warm_up(WARMUP_S)  # stable-only traffic: the frozen latency thresholds
        s.note_latency_window([int(v) / 100 for st in plan.steps for k, v in st.items() if k == "setWeight"],
                              _comparable_seconds(plan.steps, cfg.pause_scale, s.judge.settings))
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

    outcome, reason = _decide(s, steps, "PROMOTED", "every step passed")
    return _conclude(s, "canary", cfg, plan, outcome, reason, f"{cfg.canary_version} is the new stable")
