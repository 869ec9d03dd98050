"""The drill engine: every bad input is named before anything moves; decisions on a small real platform.

The engine-logic tests run against ``RouterTarget``: a real HTTP server (in this process) that
plays the traffic layer, splitting requests between a stable and a canary "version" by the
weight the engine sets, with the canary's fault applied. The end-to-end drills on the real
local target are in ``test_drills_local.py``.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import threading
from typing import Any

import pytest
from ports import PortBlock

from clinops_lib.config import Settings
from clinops_lib.drills import BlueGreenConfig, CanaryConfig, run_blue_green, run_canary, validate_canary
from clinops_lib.drills import session as session_module
from clinops_lib.drills.anytime import JudgeSettings
from clinops_lib.drills.judge import Thresholds
from clinops_lib.exceptions import DrillError, MetricsError, ParameterError, TrafficError
from clinops_lib.faults import FaultProfile
from clinops_lib.targets.base import ComponentStatus, Target, Track, TrackState

pytestmark = pytest.mark.unit


class RouterTarget(Target):
    """A Target whose traffic layer is a real loopback HTTP server run by this test.

    Requests to ``service_url`` go to canary with the set weight (smooth weighted round-robin,
    like HAProxy), to stable otherwise; ``preview_url`` always reaches the canary. Every call
    that would move traffic is recorded in ``calls``.
    """

    name = "router"

    def __init__(self, block: PortBlock, stable_version: str = "1.0.0") -> None:
        super().__init__(Settings(ports=block.portmap()))
        self.port = block.port()
        self.preview_port = block.port()
        self.calls: list[tuple[str, Any]] = []
        self.weight = 0
        self.versions: dict[str, str] = {"stable": stable_version, "canary": ""}
        self.faults: dict[str, FaultProfile] = {"stable": FaultProfile(), "canary": FaultProfile()}
        self.served = {"stable": 0, "canary": 0}
        self.log: list[tuple[str, bool, float]] = []
        self._credit = 0.0
        self._rng = random.Random(1)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    # -- the HTTP server -----------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            preview = await asyncio.start_server(self._handle_preview, "127.0.0.1", self.preview_port)
            self._ready.set()
            async with self._server, preview:
                await asyncio.gather(self._server.serve_forever(), preview.serve_forever())

        try:
            self._loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def _route(self) -> str:
        self._credit += self.weight / 100
        if self._credit >= 1:
            self._credit -= 1
            return "canary"
        return "stable"

    async def _handle_preview(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handle(reader, writer, preview=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      preview: bool = False) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                track = "canary" if preview else self._route()
                fault = self.faults[track]
                await asyncio.sleep(0.002 + self._rng.random() * 0.003 + fault.added_latency_s)
                self.served[track] += 1
                bad = self._rng.random() < fault.error_rate
                self.log.append((self.versions[track], not bad, 0.0035 + fault.added_latency_s))
                status = b"500 Internal Server Error" if bad else b"200 OK"
                body = b'{"ok":true}'
                version = self.versions[track].encode()
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                             + b"\r\nX-Clinops-Version: " + version + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(10)

    # -- the Target hooks (the base class validates before calling them) ---------------------
    def _up(self, levels: list[int], progress: Any, **options: Any) -> bool:
        return False

    def down(self, *, purge: bool = False) -> None:
        return None

    def _observe(self) -> dict[str, ComponentStatus]:
        return {}

    def _service_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _preview_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.preview_port}"

    def _deploy(self, service: str, version: str, track: Track, fault: FaultProfile,
                timeout: float) -> TrackState:
        self.calls.append(("deploy", (version, str(fault))))
        self.versions[track] = version
        self.faults[track] = fault or FaultProfile()
        self.weight = 0
        return self.tracks(service)[track]

    def _retire(self, service: str, track: Track) -> None:
        self.calls.append(("retire", track))
        self.versions[track] = ""

    def _set_canary_weight(self, service: str, weight: int) -> None:
        self.calls.append(("weight", weight))
        self.weight = weight

    def _canary_weight(self, service: str) -> int:
        return self.weight

    def _promote(self, service: str) -> TrackState:
        self.calls.append(("promote", self.versions["canary"]))
        self.versions["stable"], self.versions["canary"] = self.versions["canary"], ""
        self.faults["stable"] = self.faults["canary"]
        self.weight = 0
        return self.tracks(service)["stable"]

    def _abort(self, service: str) -> None:
        self.calls.append(("abort", None))
        self.weight = 0

    def _tracks(self, service: str) -> dict[Track, TrackState]:
        return {t: TrackState(service, t, self.versions[t], bool(self.versions[t]))  # type: ignore[misc]
                for t in ("stable", "canary")}

    def _prometheus_query(self, promql: str) -> dict[str, Any]:
        """Answers the chart's two queries from what this router served (per version label), in
        the shape of Prometheus' instant-query ``data``."""
        m = re.search(r'version="([^"]+)"', promql)
        seen = [x for x in self.log if m is None or x[0] == m.group(1)]
        if not seen:
            return {"resultType": "vector", "result": []}
        if promql.startswith("histogram_quantile"):
            lat = sorted(x[2] for x in seen)
            value = lat[int(0.95 * (len(lat) - 1))]
        else:
            value = sum(1 for x in seen if x[1]) / len(seen)
        return {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]}

    @property
    def moved(self) -> list[tuple[str, Any]]:
        return [c for c in self.calls if c[0] in ("deploy", "weight", "promote", "abort", "retire")]


@pytest.fixture
def router(port_block: PortBlock) -> Any:
    t = RouterTarget(port_block)
    yield t
    t.close()


def _cfg(**kw: Any) -> CanaryConfig:
    base: dict[str, Any] = {"service": "model-serving", "canary_version": "1.1.0", "pause_scale": 0.1}
    base.update(kw)
    return CanaryConfig(**base)


@pytest.mark.parametrize(("kwargs", "name", "words"), [
    ({"steps": [10, 5, 100]}, "steps", "does not increase"),
    ({"steps": [10, 50, 120]}, "steps", "1..100"),
    ({"steps": [{"setWeight": 10}, {"pause": {}}]}, "steps", "needs a duration"),
    ({"steps": [{"setWeight": 10}, {"wait": 3}]}, "steps", "unknown step"),
    ({"steps": [{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 50}]}, "steps",
     "shorter than one analysis interval"),
    ({"pause_scale": 0.01}, "pause_scale", "shorter than one analysis interval"),
    ({"pause_scale": 0}, "pause_scale", "(0, 1]"),
    ({"service": "payments"}, "service", "unknown service"),
    ({"canary_version": "1.0 beta"}, "canary_version", "not a version"),
    ({"canary_version": "1.0.0"}, "canary_version", "equals the stable version"),
    ({"stable_version": "0.9.0"}, "stable_version", "not what runs on stable"),
    ({"fault": "errors:lots"}, "fault", "cannot parse"),
    ({"rate": 0}, "rate", "1..2000"),
    ({"rate": 5000}, "rate", "1..2000"),
    ({"on_inconclusive": "promote"}, "on_inconclusive", "pause, abort"),
    ({"thresholds": {"success_rate_min": 1.5}}, "thresholds.success_rate_min", "above 1"),
    ({"thresholds": {"p95_latency_max_s": -1}}, "thresholds.p95_latency_max_s", "> 0"),
    ({"thresholds": {"colour": "red"}}, "thresholds.colour", "unknown threshold"),
])
def test_bad_input_is_named_and_nothing_moves(
    kwargs: dict[str, Any], name: str, words: str, port_block: PortBlock
) -> None:
    t = RouterTarget(port_block)
    try:
        with pytest.raises(ParameterError) as err:
            run_canary(t, _cfg(**kwargs))
        assert err.value.name == name
        assert words in str(err.value)
        assert t.moved == []  # validation happens before any traffic moves
    finally:
        t.close()


def test_blue_green_scale_down_window_too_short_is_rejected(router: RouterTarget) -> None:
    with pytest.raises(ParameterError) as err:
        run_blue_green(router, BlueGreenConfig(service="model-serving", green_version="2.0.0",
                                               scale_down_delay_s=1.0))
    assert err.value.name == "scale_down_delay_s"
    assert router.moved == []


def test_steps_default_from_the_chart_and_shorthand() -> None:
    plan = validate_canary(_cfg(steps=[]))
    assert [s for s in plan.steps if "setWeight" in s][0] == {"setWeight": 10}
    plan2 = validate_canary(_cfg(steps=[20, 100]))
    assert plan2.steps[0] == {"setWeight": 20} and "pause" in plan2.steps[1]


FAST = {"interval": "10s", "min_interval_s": 1.0, "failure_limit": 0, "inconclusive_limit": 1,
        "min_requests": 10}


def test_clean_canary_is_promoted_through_every_step(router: RouterTarget) -> None:
    res = run_canary(router, _cfg(steps=[10, 50, 100], rate=150, thresholds=FAST, abort_delay_s=0,
                                  tail_s=0.5))
    assert res.outcome == "PROMOTED", res.reason
    weights = [c[1] for c in router.calls if c[0] == "weight"]
    assert weights == [10, 50, 100]
    assert ("promote", "1.1.0") in router.calls
    assert all(iv.verdict == "Pass" for iv in res.intervals)
    assert {r.version for r in res.records} >= {"1.0.0", "1.1.0"}


def test_canary_with_errors_is_aborted_early_and_traffic_returns(router: RouterTarget) -> None:
    res = run_canary(router, _cfg(steps=[10, 50, 100], rate=150, fault="errors:20%", thresholds=FAST,
                                  abort_delay_s=0.2, tail_s=1.0))
    assert res.outcome == "ABORTED"
    assert "anytime-valid judge" in res.reason or "success rate" in res.reason
    assert [c[0] for c in router.calls][-2:] == ["abort", "retire"]
    assert ("weight", 50) not in router.calls  # stopped during the first step
    # after the abort returned, no request was served by the canary
    abort_at = next(e.at for e in res.events if e.kind == "abort")
    assert not [r for r in res.records if r.sent > abort_at + 0.05 and r.version == "1.1.0"]
    assert res.intervals and res.intervals[-1].verdict == "Fail"


def test_too_little_data_never_promotes(router: RouterTarget) -> None:
    res = run_canary(router, _cfg(steps=[10, 100], rate=20, thresholds={**FAST, "min_requests": 500},
                                  on_inconclusive="abort", abort_delay_s=0, tail_s=0.2))
    assert res.outcome == "ABORTED"
    assert "inconclusive" in res.reason
    assert not [c for c in router.calls if c[0] == "promote"]
    res2 = run_canary(router, _cfg(canary_version="1.2.0", steps=[10, 100], rate=20,
                                   thresholds=Thresholds(min_requests=500, interval_s=10, min_interval_s=1,
                                                         inconclusive_limit=0), tail_s=0.2))
    assert res2.outcome == "PAUSED"
    assert not [c for c in router.calls if c[0] == "promote"]


class BrokenMetricsTarget(RouterTarget):
    """Prometheus goes away once the canary has traffic."""

    def _prometheus_query(self, promql: str) -> dict[str, Any]:
        if self.weight > 0:
            raise MetricsError("Prometheus at http://127.0.0.1:1 unreachable: connection refused")
        return super()._prometheus_query(promql)


class BrokenTrafficTarget(RouterTarget):
    """The traffic layer's admin socket disappears once the canary has traffic."""

    def _canary_weight(self, service: str) -> int:
        if self.weight > 0:
            raise TrafficError("HAProxy admin socket /state/haproxy.sock: No such file or directory")
        return self.weight


@pytest.mark.parametrize(("cls", "words"), [(BrokenMetricsTarget, "metrics unavailable"),
                                            (BrokenTrafficTarget, "traffic layer unreachable")])
def test_platform_fault_mid_drill_aborts_within_one_interval(
    cls: type[RouterTarget], words: str, port_block: PortBlock
) -> None:
    t = cls(port_block)
    try:
        res = run_canary(t, _cfg(steps=[10, 50, 100], rate=100, thresholds=FAST, abort_delay_s=0, tail_s=0.5))
    finally:
        t.close()
    assert res.outcome == "ABORTED"
    assert words in res.reason
    # the first interval at 10 % is the one that notices and says why: one interval, no more
    assert len(res.intervals) == 1
    assert ("weight", 50) not in t.calls and ("abort", None) in t.calls
    if cls is BrokenMetricsTarget:  # metrics that could not be read are no evidence: never a Pass
        assert res.intervals[0].verdict == "Inconclusive", res.intervals[0].reasons
        assert any("could not be read" in r for r in res.intervals[0].reasons)


class AbortFailsTarget(RouterTarget):
    """The traffic layer refuses the abort (its admin socket is gone) and the retirement."""

    def abort(self, service: str) -> None:
        self.calls.append(("abort-refused", None))
        raise TrafficError("HAProxy admin socket /state/haproxy.sock: No such file or directory")

    def retire(self, service: str, track: Track = "canary") -> None:
        raise TrafficError("cannot stop the canary: state file locked")


def test_a_failed_abort_is_the_result_with_its_reason(port_block: PortBlock) -> None:
    t = AbortFailsTarget(port_block)
    try:
        res = run_canary(t, _cfg(steps=[20, 100], rate=150, fault="errors:30%", thresholds=FAST,
                                 abort_delay_s=0, tail_s=0.2))
    finally:
        t.close()
    assert res.outcome == "ABORTED"
    assert res.abort_at is None  # traffic never went back: no abort time to count from
    assert res.abort_failure and "admin socket" in res.abort_failure
    assert "state file locked" in res.abort_failure
    assert "abort FAILED" in res.reason and "traffic may still reach the canary" in res.reason


def test_slow_canary_is_aborted_by_the_anytime_judge_before_the_interval_ends(router: RouterTarget) -> None:
    steps = [{"setWeight": 50}, {"pause": {"duration": "20s"}}, {"setWeight": 100}]
    res = run_canary(router, _cfg(steps=steps, pause_scale=1.0, rate=150, fault="latency:+60ms",
                                  thresholds={"interval": "10s", "min_requests": 20}, abort_delay_s=0,
                                  tail_s=0.2))
    assert res.outcome == "ABORTED"
    assert "anytime-valid judge" in res.reason and "carried by latency>" in res.reason
    (window,) = [e.detail for e in res.events if e.detail.startswith("latency compared at 50% only")]
    assert "needs a slowdown in at least 4 blocks of 1 s" in window and "too short" not in window
    # only the partial interval that was running is in the table: no full 10 s interval was needed
    assert len(res.intervals) == 1 and res.intervals[0].reasons[0].startswith("stopped early")


def test_a_plan_without_a_comparable_step_says_latency_was_not_compared(
    router: RouterTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 % then 100 %: no step at comparable load, so the judge compares no latency (a +60 ms canary
    is promoted by it) and the evidence says so instead of implying latency was judged."""
    steps = [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 100}]
    res = run_canary(router, _cfg(steps=steps, pause_scale=1.0, rate=150, fault="latency:+60ms",
                                  thresholds={"interval": "1s", "min_requests": 5}, abort_delay_s=0,
                                  tail_s=0.2))
    assert any(e.detail.startswith("latency NOT compared by the anytime judge") for e in res.events)
    assert res.error_test["latency_compared_requests"] == 0
    assert "carried by latency>" not in res.reason
    # a 50 % step (2 s, the shortest interval) shorter than a settling time of 3 s: planned, but
    # nothing compared, and the evidence says so; exactly when nothing was compared (a slow machine
    # that stretched the step past 3 s compares some requests, and then it must not say so)
    settle_3s = functools.partial(JudgeSettings, latency_settle_s=3.0)
    monkeypatch.setattr(session_module, "JudgeSettings", settle_3s)
    steps = [{"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]
    short = run_canary(router, _cfg(canary_version="1.2.0", steps=steps, pause_scale=1.0, rate=150,
                                    thresholds={"interval": "1s", "min_requests": 5}, abort_delay_s=0,
                                    tail_s=0.2))
    (window,) = [e.detail for e in short.events if e.detail.startswith("latency compared at 50% only")]
    assert "holds comparable load for 0.0 s only, too short for a latency abort" in window, window
    compared = short.error_test["latency_compared_requests"]
    said = any(e.detail.startswith("latency was NOT compared after all") for e in short.events)
    assert said == (compared == 0), (compared, said)


def test_zero_thresholds_in_a_runbook_mean_the_charts_values():
    from clinops_lib import charts
    from clinops_lib.drills.config import _thresholds, threshold_overrides

    chart = charts.analysis_thresholds("dev")
    th = _thresholds(threshold_overrides(alpha=0.05), "dev")
    assert th.success_rate_min == chart["success_rate_min"]
    assert th.p95_latency_max_s == chart["latency_p95_max_seconds"]
    overridden = _thresholds(threshold_overrides(success_rate_min=0.999, p95_latency_max_ms=120), "dev")
    assert overridden.success_rate_min == 0.999 and overridden.p95_latency_max_s == 0.12


def _result_with(records: list[Any]) -> Any:
    from clinops_lib.drills import DrillResult

    return DrillResult("canary", "clinical-gateway", "1.0.0", "1.1.0", "PROMOTED", "every step passed",
                       1000.0, 1010.0, 1010.0, None, [], [], records, {}, [], 2.0)


def _records(n: int, fail_every: int = 0) -> list[Any]:
    from clinops_lib.drills.loadgen import RequestRecord

    return [RequestRecord(i, "user", 1000.0 + i * 0.05, 1000.0 + i * 0.05, 1000.01 + i * 0.05,
                          500 if fail_every and i % fail_every == 0 else 200, "1.0.0") for i in range(n)]


def test_error_rate_axis_starts_at_zero_and_shows_the_worst_rate() -> None:
    from clinops_lib.drills.plots import traffic_figure

    clean = traffic_figure(_result_with(_records(200))).layout.yaxis2.range
    assert clean[0] == 0 and clean[1] > 0  # no errors: no negative half of the axis
    faulty = traffic_figure(_result_with(_records(200, fail_every=2))).layout.yaxis2.range
    assert faulty[0] == 0 and faulty[1] >= 0.5 > clean[1]  # every other request failed: 50 % visible


def _bg(**kw: Any) -> BlueGreenConfig:
    base: dict[str, Any] = {"service": "model-serving", "green_version": "2.0.0", "pause_scale": 0.1,
                            "rate": 150, "thresholds": FAST, "abort_delay_s": 0, "tail_s": 0.3,
                            "scale_down_delay_s": 2.5, "env": "prod"}
    base.update(kw)
    return BlueGreenConfig(**base)


def test_manual_blue_green_awaits_approval_with_green_as_preview(router: RouterTarget) -> None:
    from clinops_lib.drills import auto_promotion_enabled, promote_blue_green

    assert auto_promotion_enabled(_bg()) is False  # prod values: autoPromotionEnabled false
    assert auto_promotion_enabled(_bg(env="dev")) is True
    res = run_blue_green(router, _bg())
    assert res.outcome == "AWAITING_APPROVAL", res.reason
    assert not [c for c in router.calls if c[0] in ("weight", "promote", "abort", "retire")]
    assert router.tracks("model-serving")["canary"].version == "2.0.0"  # green still runs as preview
    assert router.weight == 0 and all(iv.verdict == "Pass" for iv in res.intervals)
    from clinops_lib.drills.plots import traffic_figure, weight_figure

    assert weight_figure(res).data and traffic_figure(res).data  # the runbook draws this outcome too
    # a promotion of something else than what runs as preview moves nothing
    with pytest.raises(DrillError, match="not running as preview"):
        promote_blue_green(router, _bg(green_version="2.0.1"))
    assert not [c for c in router.calls if c[0] in ("weight", "promote", "abort", "retire")]
    done = promote_blue_green(router, _bg(blue_version="1.0.0"))
    assert done.outcome == "PROMOTED", done.reason
    assert [c[1] for c in router.calls if c[0] == "weight"] == [100, 0, 100]
    assert ("promote", "2.0.0") in router.calls
    before = done.switches["promotion"].versions_before  # this router routes a request in flight
    assert before.get("1.0.0", 0) > 0.9 * sum(before.values())  # at the switch to green: nearly all blue
    assert done.switches["promotion"].versions_after.keys() == {"2.0.0"}


# -- the interval verdict and the limits across intervals (clinops_lib.drills.judge) ----------------
def _recs(n_canary: int, n_stable: int, *, t0: float = 100.0, failed_canary: int = 0) -> list[Any]:
    from clinops_lib.drills.loadgen import RequestRecord

    out = []
    for i in range(n_canary + n_stable):
        canary = i < n_canary
        status = 500 if canary and i < failed_canary else 200
        out.append(RequestRecord(i, "user", t0 + i * 0.001, t0 + i * 0.001, t0 + i * 0.001 + 0.01, status,
                                 "2.0.0" if canary else "1.0.0"))
    return out


def test_routing_split_flags_a_share_far_from_the_weight_and_not_round_robin_noise() -> None:
    from clinops_lib.drills.judge import routing_split

    assert routing_split(_recs(10, 90), "2.0.0", "1.0.0", 10).p_value > 0.5  # exactly the weight
    off = routing_split(_recs(75, 25), "2.0.0", "1.0.0", 10)  # stable out of rotation: canary flooded
    assert off is not None and off.p_value < 1e-6 and off.canary == 75 and off.n == 100
    assert routing_split(_recs(100, 0), "2.0.0", "1.0.0", 100) is None  # no split to check at 100 %
    assert routing_split(_recs(2, 8), "2.0.0", "1.0.0", 10) is None  # too few requests to say


def test_judge_interval_fails_on_canary_errors_and_passes_a_clean_interval() -> None:
    from clinops_lib.drills.anytime import DrillJudge
    from clinops_lib.drills.judge import judge_interval

    th = Thresholds()
    kw = {"canary": "2.0.0", "stable": "1.0.0", "thresholds": th, "index": 0, "step": "s",
          "start": 0.0, "end": 1e9, "weight": 10}
    ok = judge_interval(_recs(30, 270), drill_judge=DrillJudge(), **kw)
    assert ok.verdict == "Pass" and (ok.canary_n, ok.stable_n) == (30, 270)
    bad = judge_interval(_recs(30, 270, failed_canary=10), drill_judge=DrillJudge(), **kw)
    assert bad.verdict == "Fail" and "success rate" in bad.reasons[0]
    assert (bad.canary_errors, bad.stable_errors) == (10, 0)
    few = judge_interval(_recs(5, 95), drill_judge=DrillJudge(), **kw)
    assert few.verdict == "Inconclusive" and "only 5 canary requests" in few.reasons[0]


def test_interval_limits_apply_failure_and_inconclusive_limits() -> None:
    from clinops_lib.drills.judge import IntervalLimits, IntervalVerdict

    def iv(verdict: Any) -> IntervalVerdict:
        return IntervalVerdict(0, "s", 0, 1, 10, verdict, [verdict.lower()], "2", "1")

    limits = IntervalLimits(Thresholds(failure_limit=1, inconclusive_limit=1))
    assert limits.add(iv("Fail")) is None
    d = limits.add(iv("Fail"))
    assert d is not None and d.outcome == "ABORTED" and "failureLimit 1" in d.reason
    paused = IntervalLimits(Thresholds(inconclusive_limit=0))
    assert paused.add(iv("Inconclusive")).outcome == "PAUSED"
    aborted = IntervalLimits(Thresholds(inconclusive_limit=0), on_inconclusive="abort")
    assert aborted.add(iv("Inconclusive")).outcome == "ABORTED"
