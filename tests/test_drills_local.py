"""End-to-end drills on the REAL local target: HAProxy, the services, Prometheus, PostgreSQL,
Redis and LocalStack as processes, on a port block from the harness (tests/ports.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator

import pytest
from conftest import enterable_tmpdir
from ports import PortAllocator

from clinops_lib.config import Settings
from clinops_lib.drills import BlueGreenConfig, CanaryConfig, DrillResult, run_blue_green, run_canary
from clinops_lib.targets.base import Target, get_target

pytestmark = [pytest.mark.component, pytest.mark.slow]

@pytest.fixture(scope="module")
def target(port_allocator: PortAllocator) -> Iterator[Target]:
    state = enterable_tmpdir("clinops-drills-")
    block = port_allocator.block()
    t = get_target(Settings(target="local", state_dir=state, ports=block.portmap()))
    try:
        t.up([0, 1, 4, 6])
        yield t
    finally:
        try:
            t.down(purge=True)
            t.close()
        finally:
            shutil.rmtree(state, ignore_errors=True)
            port_allocator.release(block)


def _stable(target: Target, service: str) -> str:
    return target.tracks(service)["stable"].version


def _no_canary_after_abort(res: DrillResult) -> None:
    abort_at = next(e.at for e in res.events if e.kind == "abort")
    late = [r for r in res.records if r.sent > abort_at and r.version == res.canary_version]
    assert late == [], f"{len(late)} requests served by the canary after the abort"
    assert [r for r in res.records if r.sent > abort_at and r.status > 0], "no traffic after the abort"


def test_clean_canary_is_promoted(target: Target) -> None:
    before = _stable(target, "clinical-gateway")
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.0.0-clean"))
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


def test_errors_5_percent_is_aborted(target: Target) -> None:
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.1.0-errors",
                                          fault="errors:5%"))
    assert res.outcome == "ABORTED", res.reason
    assert "error" in res.reason or "success rate" in res.reason
    assert _stable(target, "clinical-gateway") != "9.1.0-errors"
    assert target.canary_weight("clinical-gateway") == 0
    assert not target.tracks("clinical-gateway")["canary"].running
    _no_canary_after_abort(res)


def test_latency_100ms_is_aborted(target: Target) -> None:
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.2.0-slow",
                                          fault="latency:+100ms"))
    assert res.outcome == "ABORTED", res.reason
    assert "slower" in res.reason
    failed = [iv for iv in res.intervals if iv.verdict == "Fail"]
    assert failed and failed[0].latency is not None and failed[0].latency.shift_s is not None
    assert failed[0].latency.shift_s > 0.05  # the measured shift is the injected one, not noise
    _no_canary_after_abort(res)


def test_canary_killed_mid_drill_is_aborted_and_traffic_stays_on_stable(target: Target) -> None:
    res = run_canary(target, CanaryConfig(service="clinical-gateway", canary_version="9.3.0-crash",
                                          fault="crash:after=100"))
    assert res.outcome == "ABORTED", res.reason
    assert "not running" in res.reason
    last_canary = max(r.done for r in res.records if r.version == "9.3.0-crash")
    # the abort comes within one analysis interval of the canary's last answer
    assert res.decided_at - last_canary <= res.interval_s
    _no_canary_after_abort(res)
    assert target.canary_weight("clinical-gateway") == 0


def test_blue_green_promote_and_rollback_without_failed_requests(target: Target) -> None:
    blue = _stable(target, "model-serving")
    res = run_blue_green(target, BlueGreenConfig(service="model-serving", green_version="9.5.0-green"))
    assert res.outcome == "PROMOTED", res.reason
    c = res.checks
    # who served before and after each switch, from the per-request records
    assert set(c["promotion"]["versions_before"]) == {blue}
    assert set(c["promotion"]["versions_after"]) == {"9.5.0-green"}
    assert set(c["rollback"]["versions_after"]) == {blue}
    assert set(c["roll-forward"]["versions_after"]) == {"9.5.0-green"}
    for name in ("promotion", "rollback", "roll-forward"):
        assert c[name]["requests_around_switch"] > 0
        assert c[name]["failed_requests_around_switch"] == 0
    assert c["failed_user_requests_total"] == 0
    assert _stable(target, "model-serving") == "9.5.0-green"


def test_prometheus_lost_mid_drill_aborts_and_says_why(target: Target) -> None:
    """Prometheus is killed (SIGKILL, from its pid file) the moment the canary gets traffic."""
    pid_file = target.settings.state_dir / "run" / "prometheus.pid"

    def log(message: str) -> None:
        if "[weight] canary weight 10%" in message:
            os.kill(int(json.loads(pid_file.read_text())["pid"]), signal.SIGKILL)

    try:
        cfg = CanaryConfig(service="clinical-gateway", canary_version="9.4.0-noprom")
        res = run_canary(target, cfg, log=log)
        assert res.outcome == "ABORTED", res.reason
        assert "metrics unavailable" in res.reason and "Prometheus" in res.reason
        assert len(res.intervals) == 1  # the first interval with canary traffic is the one that says so
        _no_canary_after_abort(res)
    finally:
        target.up([6])  # Prometheus back for whatever runs next on this platform
