"""A running drill: load, per-request records, the judge's looks, events, and the shared ending.

Both drills (:mod:`.canary`, :mod:`.bluegreen`) open a session (deploy the new version, start
user load), move traffic through it and end through :func:`_carry_out` (abort, promote or stay
paused). The session acts only through the :class:`~clinops_lib.targets.base.Target` contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from .. import catalog
from ..exceptions import ChartError, ClinopsError, DrillError, TargetError
from ..targets.base import Target
from . import judge as J
from .anytime import DrillJudge, JudgeSettings
from .config import BlueGreenConfig, CanaryConfig, _Plan
from .feed import JudgeFeed
from .loadgen import LoadGenerator, LoadSpec, RequestRecord, default_payloads
from .result import DrillEvent, DrillResult, Outcome

__all__: list[str] = []


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
        self.limits = J.IntervalLimits(self.th, "abort" if on_inconclusive == "abort" else "pause")
        self.metric_runs = [J.MetricRun(s) for s in self._metric_specs()]
        self.step_name = "start"
        self.expect_weight: int | None = None
        self.latency_planned = False  # the plan has a step at comparable load (note_latency_window)

    def _metric_specs(self) -> list[J.MetricSpec]:
        from .. import charts

        try:
            queries = charts.analysis_queries(self.target.settings.environment, self.service, self.canary)
        except ChartError:
            return []
        return self.th.metric_specs(queries)

    def event(self, kind: str, detail: str, weight: int | None = None, at: float | None = None) -> None:
        ev = DrillEvent(time.time() if at is None else at, kind, self.weight if weight is None else weight,
                        detail)
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
                requests_per_connection=self.target.requests_per_connection,
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

        Meanwhile the new version gets about 20 requests straight on its preview endpoint (not
        judged, not recorded): readiness is not warmth, and a freshly started process answering
        its very first requests slowly is not the regression the judge is there to find.
        """
        warm: LoadGenerator | None = None
        try:
            warm = LoadGenerator(LoadSpec(url=self.target.preview_url(self.service), path=self.path,
                                          rate=10, duration_s=min(2.0, seconds), label="warm-up",
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

    def note_latency_window(self, shares: list[float], comparable_s: float | None = None) -> None:
        """Say in the evidence at which of the plan's shares latency is compared, how much sustained
        slowdown an abort on latency needs, or that latency is not compared at all
        (``JudgeSettings.latency_shares``, ``latency_block_cap``; why in :mod:`.anytime`).

        ``comparable_s``: how long the plan holds a comparable share after settling (when known);
        shorter than the blocks an abort needs means latency can flag but never abort.
        """
        st = self.judge.settings
        lo, hi = st.latency_shares
        window = f"canary share {lo:.0%}-{hi:.0%}, from {st.latency_settle_s:g} s after each change"
        judged = sorted({round(x * 100) for x in shares if st.latency_comparable(x)})
        self.latency_planned = bool(judged)
        if not judged:
            self.event("thresholds", "latency NOT compared by the anytime judge: no step at comparable "
                       f"load ({window}); only the absolute p95 threshold guards latency")
            return
        blocks = st.latency_min_blocks()
        sustained = (f"; a latency abort needs a slowdown in at least {blocks} blocks of "
                     f"{st.latency_block_s:g} s (evidence capped at {st.latency_block_cap:g}x per block: "
                     "one instance's hiccup does not abort)") if blocks else ""
        short = ""
        if blocks and comparable_s is not None and comparable_s < blocks * st.latency_block_s:
            short = (f"; this plan holds comparable load for {comparable_s:.1f} s only, too short for a "
                     "latency abort: the absolute p95 threshold guards latency")
        self.event("thresholds", f"latency compared at {', '.join(f'{w}%' for w in judged)} only "
                   f"(comparable load: {window}){sustained}{short}; errors at every share")

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
        """Move traffic, only to a canary seen running just now: a canary that died at the end of a
        step must abort the drill, not receive the next step's share. The event is stamped when the
        change was issued (after that check), so the evidence orders it against the canary's answers."""
        self.check_platform()
        t0 = time.time()
        try:
            self.target.set_canary_weight(self.service, w)
        except TargetError as e:
            raise _Aborted("ABORTED", f"could not set canary weight {w}%: {e}") from e
        self.judge_feed.set_share(t0, time.time(), w / 100)
        self.weight = w
        self.expect_weight = w
        self.event("weight", f"canary weight {w}%", w, at=t0)

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
            self.settle(end)
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

    def settle(self, end: float) -> None:
        """Wait until every request sent before ``end`` has its answer (at most the client timeout),
        feeding the judge and watching the platform meanwhile. Judging an interval on the requests
        that happened to complete by its end would drop exactly the slow ones: on a loaded machine
        a 2 s interval then held "only 4 canary requests" and a healthy drill paused for no data."""
        running = [g for g in self.gens if g.running]
        deadline = time.time() + max((g.spec.timeout_s for g in running), default=0.0) + 0.5
        while not all(g.settled_before(end) for g in running) and time.time() < deadline:
            time.sleep(0.05)
            self.feed()
            self.check_platform()
        self.feed()

    def judge_interval(self, start: float, end: float, query_metrics: bool = True) -> J.IntervalVerdict:
        """Ask :func:`judge.judge_interval` about the requests sent in ``[start, end)``."""
        return J.judge_interval(
            self.all_records(), canary=self.canary, stable=self.stable, thresholds=self.th,
            drill_judge=self.judge, metric_runs=self.metric_runs,
            query=self.target.prometheus_query if query_metrics else None,
            index=len(self.intervals), step=self.step_name, start=start, end=end, weight=self.weight,
        )

    def decide(self, iv: J.IntervalVerdict) -> None:
        """Apply the limits across intervals (:class:`judge.IntervalLimits`); stop when they say so."""
        if decision := self.limits.add(iv, self.metric_runs):
            raise _Aborted(decision.outcome, decision.reason)

    def until_pass(self, max_intervals: int) -> None:
        """Judge intervals until one passes (never promote on data not yet judged a Pass)."""
        for _ in range(max_intervals):
            if self.one_interval(self.plan.interval).verdict == "Pass":
                return
        raise _Aborted(self.limits.no_data_outcome, f"no passing interval in {max_intervals} at the final "
                       "weight: not promoting without data")

    def error_test_summary(self) -> dict[str, Any]:
        """The anytime-valid judge at the moment of decision, with its confidence sequences."""
        return {**self.judge.summary(), "confidence_sequences": self.judge.confidence_sequences()}


def _noop(_: str) -> None:
    return None


def _payloads(service: str) -> tuple[str, list[bytes]]:
    import scipy.stats  # noqa: F401 - imported now, not inside the first interval's judgement

    path = catalog.service(service).path
    return path, default_payloads(path)


def _carry_out(
    s: _Session, outcome: Outcome, reason: str, abort_delay_s: float, promoted: str
) -> tuple[Outcome, str]:
    """Act on the decision: abort, promote (a failed promotion becomes an abort) or stay paused.

    Returns the outcome and reason as they finally stand; ``promoted`` is the promote event's text.
    """
    if outcome == "ABORTED":
        if failure := _finish_abort(s, abort_delay_s):
            reason = f"{reason}; {failure}"
    elif outcome == "AWAITING_APPROVAL":
        s.event("pause", f"green {s.canary} stays as preview: promotion needs a signed approval")
    elif outcome == "PROMOTED":
        try:
            s.target.promote(s.service)
            s.weight = 0
            s.event("promote", promoted, 100)
        except TargetError as e:
            s.event("error", f"promote failed: {e}; aborting")
            outcome, reason = "ABORTED", f"promotion failed: {e}"
            if failure := _finish_abort(s, abort_delay_s):
                reason = f"{reason}; {failure}"
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


def _finish_abort(s: _Session, abort_delay_s: float) -> str | None:
    """All traffic back to stable at once; the canary is retired after the abort delay.

    Returns None when both happened, else what failed (also an ``error`` event): an abort that
    could not be carried out is the most important fact of the drill and must reach its result.
    """
    failures = []
    try:
        s.target.abort(s.service)
        s.weight = 0
        s.expect_weight = 0
        s.event("abort", "all traffic back to stable", 0)
    except TargetError as e:
        failures.append(f"abort FAILED (traffic may still reach the canary): {e}")
        s.event("error", failures[-1])
    time.sleep(abort_delay_s)
    try:
        s.target.retire(s.service, "canary")
        s.event("retire", f"canary {s.canary} retired")
    except TargetError as e:
        failures.append(f"retire of the canary FAILED: {e}")
        s.event("error", failures[-1])
    return "; ".join(failures) or None


def _record_splits(s: _Session) -> None:
    """Each interval's realized canary share, from the complete records (the load has stopped); an
    interval far off its weight is an event: the judge's null assumes requests reach the canary at
    the configured weight, so a verdict drawn while the split was off is to be read with care."""
    records = s.all_records()
    for iv in s.intervals:
        split = J.routing_split([r for r in records if iv.start <= r.sent < iv.end], s.canary, s.stable,
                                iv.weight)
        if split is None:
            continue
        iv.canary_share = split.canary / split.n
        if split.p_value < J.SPLIT_P_MIN:
            s.event("split", f"interval {iv.index}: {split.canary} of {split.n} user requests reached "
                    f"the canary at weight {iv.weight}% (a server out of rotation?); the judge assumes it")


def _decide(s: _Session, steps: Callable[[], None], outcome: Outcome, reason: str) -> tuple[Outcome, str]:
    """Run a drill's steps; a decision to stop (:class:`_Aborted`) becomes the outcome, and any
    other exception (a bug, Ctrl-C) first puts all traffic back on stable and stops the load."""
    try:
        steps()
    except _Aborted as a:
        return a.outcome, a.reason
    except BaseException:
        _finish_abort(s, 0)
        s.stop_load()
        raise
    return outcome, reason


def _conclude(s: _Session, kind: Literal["canary", "blue-green"], cfg: CanaryConfig | BlueGreenConfig,
              plan: _Plan, outcome: Outcome, reason: str, promoted: str) -> DrillResult:
    """The shared ending of both drills: record the decision, carry it out (abort, promote, stay
    paused), keep the load flowing ``tail_s`` as evidence of where traffic went, clear stable's
    baseline fault, then the result."""
    decided = time.time()
    if s.latency_planned and s.judge.latency_compared == 0:
        st = s.judge.settings
        s.event("thresholds", "latency was NOT compared after all: no request was sent at a comparable "
                f"share {st.latency_settle_s:g} s or more after it was applied (a step shorter than that, "
                "or a decision before it)")
    s.event("decision", f"{outcome}: {reason}")
    outcome, reason = _carry_out(s, outcome, reason, cfg.abort_delay_s, promoted)
    time.sleep(cfg.tail_s)
    load = s.stop_load()
    _clear_stable_fault(s, outcome)
    _record_splits(s)
    return DrillResult(
        kind=kind, service=cfg.service, stable_version=plan.stable_version, canary_version=s.canary,
        outcome=outcome, reason=reason, started_at=s.started_at, decided_at=decided, ended_at=time.time(),
        first_canary_traffic_at=s.first_canary_at, events=s.events, intervals=s.intervals,
        records=s.all_records(), load=load, steps=plan.steps, interval_s=plan.interval,
        error_test=s.error_test_summary(),
    )
