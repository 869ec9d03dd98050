"""The canary drill: Argo Rollouts steps (setWeight / pause / analysis) judged every interval."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..targets.base import Target
from . import judge as J
from .config import CanaryConfig, validate_canary
from .result import DrillResult, Outcome
from .session import _Aborted, _carry_out, _finish_abort, _open_session

__all__ = ["run_canary"]


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
        time.sleep(min(1.0, plan.interval / 2))  # a baseline on stable before any traffic moves
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
