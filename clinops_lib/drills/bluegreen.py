"""The blue-green drill: preview analysis, switch, post-promotion analysis, rollback drill, scale-down.

Where the environment promotes by hand (the chart's ``autoPromotionEnabled: false``) the drill
stops after the pre-promotion analysis with AWAITING_APPROVAL and :func:`promote_blue_green`
runs the second half once a signed approval exists (``runbooks/04-promote.ipynb``). Both end
through the drills' shared ending (:func:`~clinops_lib.drills.session._conclude`); the switches
become typed :class:`SwitchCheck` rows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from ..exceptions import DrillError, TargetError
from ..targets.base import Target
from .config import WARMUP_S, BlueGreenConfig, _Plan, auto_promotion_enabled, validate_blue_green
from .loadgen import LoadGenerator
from .result import DrillResult, Outcome, SwitchCheck
from .session import _conclude, _decide, _noop, _open_session, _Session

__all__ = ["promote_blue_green", "run_blue_green"]

_Switches = list[tuple[str, float, float]]


def run_blue_green(
    target: Target, cfg: BlueGreenConfig, *, log: Callable[[str], None] | None = None
) -> DrillResult:
    """Blue-green drill: preview analysis, switch, post analysis, rollback drill, scale-down.

    With auto promotion off (the chart's ``autoPromotionEnabled: false``, production) the drill
    stops after a passing pre-promotion analysis with outcome AWAITING_APPROVAL, green still
    running as preview; :func:`promote_blue_green` does the rest after a signed approval.
    """
    plan, preview_rate, delay = validate_blue_green(cfg, target)
    manual = not auto_promotion_enabled(cfg)
    s = _open_session(target, cfg, plan, cfg.green_version, log, "green", "as preview")
    preview: list[LoadGenerator] = []  # started after the warm-up
    s.expect_weight = 0
    switches: _Switches = []

    def steps() -> None:
        s.step_name = "warm-up"
        s.warm_up(WARMUP_S)  # blue only: the frozen latency thresholds
        preview.append(s.start_load(target.preview_url(cfg.service), preview_rate, "preview"))
        s.set_share(preview_rate / (preview_rate + cfg.rate))
        s.note_latency_window([preview_rate / (preview_rate + cfg.rate)])
        s.step_name = "pre-promotion"
        s.event("pause", f"pre-promotion analysis: {s.th.count} intervals on the preview")
        for _ in range(s.th.count):
            s.one_interval(plan.interval)
        if s.intervals[-1].verdict != "Pass":
            s.until_pass(s.th.inconclusive_limit + 1)
        s.stop_gen(preview[0])
        s.set_share(0.0)  # no stable traffic to compare with from here on
        if not manual:
            _promote_and_watch(s, cfg, plan, delay, switches)

    passed: tuple[Outcome, str] = (
        ("AWAITING_APPROVAL",
         "pre-promotion analysis passed; autoPromotionEnabled is false: needs a signed approval")
        if manual else ("PROMOTED", "pre- and post-promotion analysis passed")
    )
    outcome, reason = _decide(s, steps, *passed)
    if preview and preview[0].running:
        preview[0].stop()
    return _finish_blue_green(s, cfg, plan, outcome, reason, delay, switches)


def promote_blue_green(
    target: Target, cfg: BlueGreenConfig, *, log: Callable[[str], None] | None = None
) -> DrillResult:
    """The second half of a blue-green release that awaited approval: switch users to the
    green already running as preview, post-promotion analysis, rollback drill, scale-down.

    The caller has verified the signed approval (:mod:`clinops_lib.evidence.approvals`); this checks
    that what runs is what was approved: ``cfg.blue_version`` on stable and
    ``cfg.green_version`` on the canary track, else :class:`DrillError` before any traffic moves.
    """
    plan, _preview_rate, delay = validate_blue_green(cfg, target)
    try:
        green = target.tracks(cfg.service)["canary"]
    except TargetError as e:
        raise DrillError(f"cannot read the tracks of {cfg.service}: {e}") from e
    if not green.running or green.version != cfg.green_version:
        raise DrillError(
            f"{cfg.service}: the approved green {cfg.green_version} is not running as preview "
            f"(canary track: {green.version if green.running else 'nothing'}); nothing moved"
        )
    s = _Session(target, cfg.service, plan.stable_version, cfg.green_version, plan, cfg.on_inconclusive,
                 cfg.poll_s, log or _noop)
    s.event("deploy", f"promoting green {cfg.green_version} (running as preview) after a signed approval", 0)
    s.start_load(target.service_url(cfg.service), cfg.rate, "user")
    s.set_share(0.0)
    s.expect_weight = 0
    switches: _Switches = []

    def steps() -> None:
        time.sleep(min(1.0, plan.interval / 2))  # users on blue before the switch: the "before" evidence
        _promote_and_watch(s, cfg, plan, delay, switches)

    outcome, reason = _decide(s, steps, "PROMOTED", "approved; post-promotion analysis passed")
    return _finish_blue_green(s, cfg, plan, outcome, reason, delay, switches)


def _promote_and_watch(
    s: _Session, cfg: BlueGreenConfig, plan: _Plan, delay: float, switches: _Switches
) -> None:
    """Switch users to green, post-promotion analysis, rollback drill, scale-down window."""

    def switch(weight: int, name: str) -> None:
        t0 = time.time()
        s.set_weight(weight)
        switches.append((name, t0, time.time()))
        s.event("switch", f"{name}: {'green' if weight == 100 else 'blue'} serves all users", weight)

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


def _finish_blue_green(s: _Session, cfg: BlueGreenConfig, plan: _Plan, outcome: Outcome, reason: str,
                       delay: float, switches: _Switches) -> DrillResult:
    """The shared ending, then one typed :class:`SwitchCheck` per switch, read from the records."""
    promoted = f"green {cfg.green_version} is the new stable; blue scaled down"
    res = _conclude(s, "blue-green", cfg, plan, outcome, reason, promoted)
    records = res.records
    for name, t0, t1 in switches:
        before = [r for r in records if r.label == "user" and t0 - 2 * plan.interval <= r.sent < t0]
        after = [r for r in records if r.label == "user" and t1 < r.sent <= t1 + plan.interval]
        around = [r for r in records if r.label == "user" and t0 - 1.0 <= r.sent <= t1 + 1.0]
        res.switches[name] = SwitchCheck(
            at=t0,
            switch_seconds=t1 - t0,
            versions_before=dict(Counter(r.version or f"<{r.status}>" for r in before)),
            versions_after=dict(Counter(r.version or f"<{r.status}>" for r in after)),
            failed_requests_around_switch=sum(1 for r in around if r.failed),
            requests_around_switch=len(around),
        )
    res.checks = {
        "scale_down_delay_s": delay,
        "failed_user_requests_total": sum(1 for r in records if r.label == "user" and r.failed),
    }
    return res
