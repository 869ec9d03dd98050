"""A running drill: load, per-request records, the judge's looks, events, and the shared ending.

Both drills (:mod:`.canary`, :mod:`.bluegreen`) open a session (deploy the new version, start
user load), move traffic through it and end through :func:`_carry_out` (abort, promote or stay
paused). The session acts only through the :class:`~clinops_lib.targets.base.Target` contract.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..exceptions import ChartError, ClinopsError, DrillError, TargetError
from ..targets.base import Target
from . import judge as J
from .config import SERVICE_PATHS, BlueGreenConfig, CanaryConfig, _Plan
from .loadgen import LoadGenerator, LoadSpec, RequestRecord, default_payloads
from .result import DrillEvent, Outcome
from .sequential import BernoulliErrorSPRT, newcombe_diff_ci

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
        self.sprt = BernoulliErrorSPRT(alpha=self.th.alpha)
        self.gens: list[LoadGenerator] = []
        self._cursor: dict[int, int] = {}
        self.weight = 0
        self.share = 0.0  # probability a request in the compared streams is a canary request
        self.first_canary_at: float | None = None
        self.failed_intervals = 0
        self.inconclusive_intervals = 0
        self.metric_runs = [J.MetricRun(s) for s in self._metric_specs()]
        self.step_name = "start"
        self.segment_start = time.time()
        self.seg_canary: list[float] = []
        self.seg_stable: list[float] = []
        self.recent: deque[bool] = deque(maxlen=200)
        self.looks = 0
        self._next_look = 0.0
        self.expect_weight: int | None = None

    def _metric_specs(self) -> list[J.MetricSpec]:
        from .. import charts

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
        ).start()
        self.gens.append(gen)
        self._cursor[id(gen)] = 0
        return gen

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
        """Feed requests completed since the last call to the sequential error test."""
        new: list[RequestRecord] = []
        for g in self.gens:
            i = self._cursor[id(g)]
            chunk = g.records_since(i)
            self._cursor[id(g)] = i + len(chunk)
            new.extend(chunk)
        new.sort(key=lambda r: r.done)
        for r in new:
            if r.version == self.canary and self.first_canary_at is None:
                self.first_canary_at = r.sent
            if r.version not in (self.canary, self.stable) or r.status <= 0:
                continue
            is_canary = r.version == self.canary
            # the null share comes from earlier requests only (predictable)
            self.sprt.observe(is_canary, r.failed, self.null_share())
            self.recent.append(is_canary)
            if r.ok and r.sent >= self.segment_start:
                (self.seg_canary if r.version == self.canary else self.seg_stable).append(r.latency_s)
        if self.sprt.rejected:
            ci = self.sprt.difference_ci()
            diff = (
                f", difference {ci[0] * 100:+.1f} pp [{ci[1] * 100:+.1f}, {ci[2] * 100:+.1f}]" if ci else ""
            )
            raise _Aborted(
                "ABORTED",
                f"canary error rate higher than stable: sequential test e={self.sprt.e_value:.1f}"
                f" >= 1/alpha={1 / self.th.alpha:.0f} ({self.sprt.canary_errors}/{self.sprt.canary_n} "
                f"canary vs {self.sprt.stable_errors}/{self.sprt.stable_n} stable errors{diff})",
            )
        if time.time() >= self._next_look:
            self._next_look = time.time() + 1.0
            self.latency_look()

    def latency_look(self) -> None:
        """Early look at latency since the last weight change, between intervals.

        Each look k (counted over the whole drill) tests at ``latency_alpha / 2**(k+1)``: the
        levels sum to ``latency_alpha`` however many looks are taken (a union bound), so the
        early looks cannot raise the false-alarm rate above the per-drill ``latency_alpha``;
        the minimum effect size applies as in the interval test.
        """
        if len(self.seg_canary) < self.th.min_requests or len(self.seg_stable) < self.th.min_requests:
            return
        alpha_k = self.th.latency_alpha * 0.5 ** (self.looks + 1)
        self.looks += 1
        res = J.compare_latency(
            self.seg_canary,
            self.seg_stable,
            alpha=alpha_k,
            min_effect_s=self.th.min_latency_effect_s,
            min_samples=self.th.min_requests,
            effect_only_if_significant=True,
            seed=self.looks,
        )
        if res.verdict == "Fail":
            raise _Aborted("ABORTED", f"{res.reason} (early look {self.looks}, level {alpha_k:.2g})")

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
        try:
            self.target.set_canary_weight(self.service, w)
        except TargetError as e:
            raise _Aborted("ABORTED", f"could not set canary weight {w}%: {e}") from e
        self.weight = w
        self.share = w / 100
        self.expect_weight = w
        self.new_segment()
        self.event("weight", f"canary weight {w}%", w)

    def new_segment(self) -> None:
        """Latency comparisons only mix requests sent under the same weights."""
        self.segment_start = time.time()
        self.seg_canary = []
        self.seg_stable = []
        self.recent.clear()

    def null_share(self) -> float:
        """Probability that a request is a canary request, for the sequential error test.

        The configured weight, or the canary's share of the last 100-200 attributed
        requests (before this one) when that is higher: a traffic layer may overshoot for a
        moment after a weight change. Overstating the share only makes the test more
        conservative (a canary error then counts for less; a stable error's factor does not
        depend on it), so taking the larger of the two keeps the false-alarm bound.
        """
        if len(self.recent) >= 100:
            return max(self.share, sum(self.recent) / len(self.recent))
        return self.share

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

        c_ok = [r.latency_s for r in canary_recs if r.ok]
        s_ok = [r.latency_s for r in stable_recs if r.ok]
        c_err = sum(1 for r in canary_recs if r.failed)
        s_err = sum(1 for r in stable_recs if r.failed)
        if len(canary_recs) < self.th.min_requests:
            worse("Inconclusive", f"only {len(canary_recs)} canary requests (< {self.th.min_requests})")
        elif canary_recs and c_err / len(canary_recs) > 1 - self.th.success_rate_min:
            worse(
                "Fail", f"canary success rate {1 - c_err / len(canary_recs):.3f} < {self.th.success_rate_min}"
            )
        if self.sprt.rejected:
            worse("Fail", "sequential error test rejected")
        total = len(recs)
        if total and len(unattributed) / total > 1 - self.th.success_rate_min:
            worse(
                "Fail", f"{len(unattributed)} of {total} requests failed with no version (proxy/connection)"
            )
        lat = J.compare_latency(
            c_ok,
            s_ok,
            alpha=self.th.latency_alpha,
            min_effect_s=self.th.min_latency_effect_s,
            min_samples=self.th.min_requests,
            seed=len(self.intervals),
        )
        if lat.verdict == "Fail":
            worse("Fail", lat.reason)
        prom: dict[str, tuple[float | None, str]] = {}
        for run in self.metric_runs if query_metrics else []:
            m = run.measure(self.target.prometheus_query, end)
            prom[run.spec.name] = (m.value, m.phase)
            if m.phase == "Failed":
                worse("Fail", f"{run.spec.name} = {m.value:.4g} fails {run.spec.success_condition}")
            elif m.phase == "Inconclusive":
                worse("Inconclusive", f"{run.spec.name}: no data")
            elif m.phase == "Error":
                # metrics that could not be read are no evidence either way: never a Pass
                worse("Inconclusive", f"{run.spec.name}: metrics could not be read ({m.message})")
        diff = None
        if canary_recs and stable_recs:
            diff = newcombe_diff_ci(c_err, len(canary_recs), s_err, len(stable_recs))
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
            error_e_value=self.sprt.e_value,
            error_p_value=self.sprt.p_value,
            error_diff=diff[0] if diff else None,
            error_diff_lo=diff[1] if diff else None,
            error_diff_hi=diff[2] if diff else None,
            canary_p50_s=J.quantile(c_ok, 0.5),
            canary_p95_s=J.quantile(c_ok, 0.95),
            stable_p50_s=J.quantile(s_ok, 0.5),
            stable_p95_s=J.quantile(s_ok, 0.95),
            latency=lat,
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
        s = self.sprt
        ci = s.difference_ci()
        return {
            "alpha": s.alpha,
            "e_value": s.e_value,
            "max_e_value": s.max_e,
            "p_anytime": s.p_value,
            "rejected": s.rejected,
            "canary_requests": s.canary_n,
            "canary_errors": s.canary_errors,
            "stable_requests": s.stable_n,
            "stable_errors": s.stable_errors,
            "difference": ci[0] if ci else None,
            "difference_ci": [ci[1], ci[2]] if ci else None,
        }


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
    s.event("deploy", f"deploying {what} {canary} {where} (fault: {plan.fault})", 0)
    try:
        target.deploy(cfg.service, canary, track="canary", fault=plan.fault, timeout=cfg.deploy_timeout_s)
    except ClinopsError as e:
        raise DrillError(f"could not deploy {what} {canary} of {cfg.service}: {e}") from e
    s.start_load(target.service_url(cfg.service), cfg.rate, "user")
    return s


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
