"""End-to-end drills on the REAL local target: HAProxy, the services, Prometheus, PostgreSQL,
Redis and LocalStack as processes: the session's one local platform (conftest.py).

The gateway drills send ``RATE`` = 100 req/s (the runbook's default is 200): what a shared 2-core
machine serves with room to spare. At 200 req/s and a load average of ~40 (other suites running)
the *stable* gateway itself answered a third of its requests with 503 (PostgreSQL pool timeouts
after 5 s), and no verdict about a canary means anything on such a baseline. The outcomes asserted
do not depend on the rate; the statistical power at 100 req/s is enough for each fault (see each
test).

Not here, because the e2e runbook sequence runs the same drills on the same local target with the
same acceptance checks (tests/test_runbooks_e2e.py): ``errors:5%`` on the gateway aborted with no
canary request after the abort and weight 0 (02-canary-aborted), and model-serving's blue-green
with its rollback drill losing no request around any switch (03-blue-green). Every drill costs
the suite's critical path: drills never run two at once (conftest.DRILLS_LOCK)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterable

import pytest
from conftest import SharedPlatform

from clinops_lib.drills import CanaryConfig, DrillResult, run_canary
from clinops_lib.targets.base import Target

pytestmark = [pytest.mark.component, pytest.mark.slow, pytest.mark.drills]

RATE = 100.0
#: crash:after=N exits 0.1 s after the N-th answer (services/_common.py); headroom for a loaded machine
CRASH_EXIT_MARGIN_S = 1.0

@pytest.fixture(scope="module")
def target(local_platform: Callable[[Iterable[int]], SharedPlatform]) -> Target:
    """The session's one local platform (conftest.py), Levels 0, 1, 4 and 6 up."""
    return local_platform([0, 1, 4, 6]).target


def _stable(target: Target, service: str) -> str:
    return target.tracks(service)["stable"].version


def _no_canary_after_abort(res: DrillResult) -> None:
    abort_at = next(e.at for e in res.events if e.kind == "abort")
    late = [r for r in res.records if r.sent > abort_at and r.version == res.canary_version]
    assert late == [], f"{len(late)} requests served by the canary after the abort"
    assert [r for r in res.records if r.sent > abort_at and r.status > 0], "no traffic after the abort"


def test_clean_canary_is_promoted(target: Target) -> None:
    before = _stable(target, "clinical-gateway")
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.0.0-clean",
                                          rate=RATE))
    assert res.outcome == "PROMOTED", res.reason
    assert _stable(target, "clinical-gateway") == "9.0.0-clean" != before
    assert not target.tracks("clinical-gateway")["canary"].running
    # no interval failed; an Inconclusive one (e.g. Prometheus had not yet scraped the new
    # version) is allowed up to inconclusiveLimit, but the interval before promotion passed with data
    assert [iv.reasons for iv in res.intervals if iv.verdict == "Fail"] == []
    assert sum(iv.verdict == "Inconclusive" for iv in res.intervals) <= 2
    assert res.intervals[-1].verdict == "Pass" and res.intervals[-1].canary_n >= 20
    # the weights went 10 -> 50 -> 100
    assert [e.weight for e in res.events if e.kind == "weight"] == [10, 50, 100]
    assert res.load["user"]["failed"] == 0


def test_latency_100ms_is_aborted(target: Target) -> None:
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.2.0-slow", rate=RATE,
                                          fault="latency:+100ms"))
    assert res.outcome == "ABORTED", res.reason
    assert "carried by latency>" in res.reason
    failed = [iv for iv in res.intervals if iv.verdict == "Fail"]
    assert failed and failed[0].canary_p50_s is not None
    # every canary request waits the injected 100 ms: a floor on its p50 whatever the machine's load
    # (the *difference* to stable is not asserted: on a saturated machine stable's own queue can
    # exceed it, and the confidence sequence then says so)
    assert failed[0].canary_p50_s >= 0.1
    assert failed[0].anytime["p50_difference_s"]["estimate"] is not None  # the evidence is there
    _no_canary_after_abort(res)


def test_tail_latency_on_5_percent_of_requests_is_aborted(target: Target) -> None:
    """5 % of the canary's requests +400 ms, judged at the step where latency is compared: 50 %
    (the judge compares latency only at comparable load, drills/anytime.py; a 10 % step before it
    would judge errors only, so it is left out here). A tail is rare by definition, and the machine's
    own load bursts slow both versions and dilute it: simulated at this rate (100 req/s, 50 %, the
    noisy latency baseline of clinops_lib/drills/simulate.py, 60 seeds) the judge caught it in 58 of
    60 runs within 117 s, median 12 s, p90 55 s; within 27 s only 22 of 30 (a run at the chart's
    30 s pause failed that way in a full suite, 2026-12-02). The pause is an upper bound: a caught
    tail ends the drill at once.

    Either analysis may carry the abort: the judge's ``latency>`` bad events, or the Argo-style
    ``latency_p95`` threshold (0.5 s) when the machine's own load adds enough to the slow 5 % (CI,
    2026-12-02: canary p95 1.45 s). Both are latency; an abort for any other reason fails."""
    steps = [{"setWeight": 50}, {"pause": {"duration": "120s"}}, {"setWeight": 100}]
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.4.0-tail", rate=RATE,
                                          fault="latency:+400ms@5%", steps=steps, pause_scale=1.0))
    assert res.outcome == "ABORTED", res.reason
    assert "carried by latency>" in res.reason or "latency_p95" in res.reason, (
        res.reason, res.error_test["components"])
    full = [e.at for e in res.events if e.kind == "weight" and e.weight == 100]
    assert not full or res.decided_at < full[0], "decided only after the canary took all traffic"
    _no_canary_after_abort(res)


#: +1 pp over a 1 % baseline is a small effect: about 100 s of traffic at 50 % before the judge
#: has the evidence (simulated: caught in ~99 % of drills; benchmarks/judge.py has the curve).
NOISY_STEPS = [{"setWeight": 50}, {"pause": {"duration": "100s"}}, {"setWeight": 100}]
#: The A/A half only has to show that equal noise is promoted: 40 s at 50 % of 200 req/s is ~4000
#: requests per track, ~40 errors on each side at 1 %, so the judge really sees errors on both.
#: Its false-abort bound is anytime-valid, so it holds at 40 s as at 100 s; a minute saved.
EQUAL_NOISE_STEPS = [{"setWeight": 50}, {"pause": {"duration": "40s"}}, {"setWeight": 100}]


def test_errors_over_a_noisy_stable_are_aborted_and_equal_noise_is_promoted(target: Target) -> None:
    worse = run_canary(target, CanaryConfig(service="model-serving", canary_version="9.5.0-errors",
                                            fault="errors:2%", stable_fault="errors:1%", steps=NOISY_STEPS,
                                            pause_scale=1.0))
    assert worse.outcome == "ABORTED", worse.reason
    assert worse.error_test["stable_errors"] > 0  # stable really was noisy
    assert target.tracks("model-serving")["stable"].fault == "none"  # the baseline fault is cleared
    same = run_canary(target, CanaryConfig(service="model-serving", canary_version="9.6.0-noisy",
                                           fault="errors:1%", stable_fault="errors:1%",
                                           steps=EQUAL_NOISE_STEPS, pause_scale=1.0))
    assert same.outcome == "PROMOTED", same.reason
    assert same.error_test["stable_errors"] > 0 and same.error_test["canary_errors"] > 0
    target.deploy("model-serving", "9.6.0-noisy", track="stable")  # the promoted release, without its fault


def test_canary_killed_mid_drill_is_aborted_and_traffic_stays_on_stable(target: Target) -> None:
    """``crash:after=500``: the canary exits after its 500th business request (~20 warm-up, ~60 at
    10 %, ~300 at 50 %, the rest at 100 % at 100 req/s); the drill must notice before it moves on."""
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.3.0-crash", rate=RATE,
                                          fault="crash:after=500"))
    assert res.outcome == "ABORTED", res.reason
    assert "not running" in res.reason
    last_canary = max(r.done for r in res.records if r.version == "9.3.0-crash")
    assert sum(1 for r in res.records if r.version == "9.3.0-crash" and r.ok) <= 500
    # The canary answers its 500th request and exits 0.1 s later (later on a loaded machine); until
    # then it is alive, and a weight change issued in that gap is legitimate. What must not happen is
    # a weight change once the process is gone: set_weight checks the canary just before it moves
    # traffic and stamps the event then. The margin covers the exit delay, not a drill's poll period.
    moved_after_death = [
        e for e in res.events
        if e.kind == "weight" and last_canary + CRASH_EXIT_MARGIN_S < e.at < res.decided_at
    ]
    assert not moved_after_death, (moved_after_death, last_canary)
    _no_canary_after_abort(res)
    assert target.canary_weight("clinical-gateway") == 0


def test_prometheus_lost_mid_drill_aborts_and_says_why(target: Target) -> None:
    """Prometheus is killed (SIGKILL, from its pid file) the moment the canary gets traffic."""
    pid_file = target.settings.state_dir / "run" / "prometheus.pid"

    def log(message: str) -> None:
        if "[weight] canary weight 10%" in message:
            os.kill(int(json.loads(pid_file.read_text())["pid"]), signal.SIGKILL)

    try:
        cfg = CanaryConfig(service="clinical-gateway", canary_version="9.4.0-noprom", rate=RATE)
        res = run_canary(target, cfg, log=log)
        assert res.outcome == "ABORTED", res.reason
        assert "metrics unavailable" in res.reason and "Prometheus" in res.reason
        assert len(res.intervals) == 1  # the first interval with canary traffic is the one that says so
        _no_canary_after_abort(res)
    finally:
        target.up([6])  # Prometheus back for whatever runs next on this platform
