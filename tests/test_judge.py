"""The judge: false alarms bounded on A/A data, real differences detected, Argo limit semantics."""

from __future__ import annotations

import numpy as np
import pytest

from clinops_lib.drills.judge import (
    Condition,
    MetricRun,
    MetricSpec,
    Thresholds,
    compare_latency,
    parse_duration,
)
from clinops_lib.drills.sequential import BernoulliErrorSPRT, newcombe_diff_ci
from clinops_lib.exceptions import MetricsError, ParameterError

pytestmark = pytest.mark.unit


def _simulate(p_stable: float, p_canary: float, weight: float, n: int, rng: np.random.Generator,
              alpha: float = 0.05) -> BernoulliErrorSPRT:
    """n requests routed with probability `weight` to the canary; the test looks after every one."""
    test = BernoulliErrorSPRT(alpha=alpha)
    to_canary = rng.random(n) < weight
    u = rng.random(n)
    for c, x in zip(to_canary, u, strict=True):
        failed = x < (p_canary if c else p_stable)
        if test.observe(bool(c), bool(failed), weight):
            break
    return test


def test_sequential_error_test_bounds_false_alarms_on_aa_data() -> None:
    rng = np.random.default_rng(20240601)
    alpha = 0.05
    runs = 400
    # A/A: both versions fail 2 % of requests; the test peeks after every request.
    alarms = sum(_simulate(0.02, 0.02, 0.1, 3000, rng, alpha).rejected for _ in range(runs))
    # Ville's inequality bounds the probability of *ever* crossing 1/alpha by alpha.
    assert alarms / runs <= alpha
    # The same data judged by a naive z-test at every 100 requests alarms far more often:
    # the bound above is not an accident of a conservative test.
    naive = 0
    for _ in range(runs):
        to_c = rng.random(3000) < 0.1
        fail = rng.random(3000) < 0.02
        for k in range(100, 3001, 100):
            c, s = to_c[:k], ~to_c[:k]
            nc, ns = c.sum(), s.sum()
            pc, ps = fail[:k][c].mean() if nc else 0, fail[:k][s].mean() if ns else 0
            p = fail[:k].mean()
            se = np.sqrt(max(p * (1 - p), 1e-12) * (1 / max(nc, 1) + 1 / max(ns, 1)))
            if (pc - ps) / se > 1.645:
                naive += 1
                break
    assert naive > alarms


def test_sequential_error_test_detects_five_points_quickly() -> None:
    rng = np.random.default_rng(7)
    canary_requests = []
    for _ in range(50):
        t = _simulate(0.0, 0.05, 0.1, 20000, rng)
        assert t.rejected
        canary_requests.append(t.rejected_at)
    # +5 percentage points over a clean stable: detected after a few canary errors.
    assert float(np.median(canary_requests)) < 300


def test_sequential_error_test_detects_against_a_noisy_stable() -> None:
    rng = np.random.default_rng(11)
    detected = sum(_simulate(0.01, 0.06, 0.1, 20000, rng).rejected for _ in range(50))
    assert detected >= 45


def test_error_difference_interval_contains_truth() -> None:
    d, lo, hi = newcombe_diff_ci(50, 1000, 10, 1000)
    assert lo < 0.04 < hi and d == pytest.approx(0.04)
    d0, lo0, hi0 = newcombe_diff_ci(0, 100, 0, 900)
    assert lo0 < 0 < hi0 and d0 == 0


def test_mann_whitney_detects_100ms_but_not_2ms() -> None:
    rng = np.random.default_rng(3)
    stable = rng.gamma(4.0, 0.005, 900)  # ~20 ms typical
    slow = rng.gamma(4.0, 0.005, 100) + 0.100
    res = compare_latency(slow, stable, alpha=0.01, min_effect_s=0.025)
    assert res.verdict == "Fail"
    assert res.shift_s is not None and res.shift_lo_s is not None and res.shift_hi_s is not None
    assert res.shift_lo_s <= 0.1 <= res.shift_hi_s
    # A tiny but statistically visible difference must not abort (minimum effect size).
    tiny = rng.gamma(4.0, 0.005, 3000) + 0.002
    res_tiny = compare_latency(tiny, rng.gamma(4.0, 0.005, 9000), alpha=0.01, min_effect_s=0.025)
    assert res_tiny.p_value is not None and res_tiny.p_value < 0.01
    assert res_tiny.verdict == "Pass"
    # Same distribution: pass.
    same = compare_latency(rng.gamma(4.0, 0.005, 100), stable, alpha=0.01, min_effect_s=0.025)
    assert same.verdict == "Pass"


def test_too_few_canary_latencies_is_inconclusive_and_no_stable_is_not_applicable() -> None:
    assert compare_latency([0.1] * 5, [0.1] * 100, min_samples=20).verdict == "Inconclusive"
    assert compare_latency([0.1] * 50, [], min_samples=20).verdict == "n/a"


def _spec(**kw: object) -> MetricSpec:
    base: dict[str, object] = {"name": "success-rate", "query": "q",
                               "success_condition": Condition.parse("result[0] >= 0.95")}
    base.update(kw)
    return MetricSpec(**base)  # type: ignore[arg-type]


def test_argo_failure_limit_means_failed_when_failures_exceed_it() -> None:
    run = MetricRun(_spec(failure_limit=1, count=5))
    run.add(0.90, 1)
    assert run.phase == "Running"  # 1 failure is not more than failureLimit 1
    run.add(0.99, 2)
    run.add(0.80, 3)
    assert run.phase == "Failed"  # 2 > 1


def test_argo_inconclusive_limit_and_no_data() -> None:
    both = _spec(success_condition=Condition.parse("result >= 0.95"),
                 failure_condition=Condition.parse("result < 0.90"), inconclusive_limit=1, count=10)
    run = MetricRun(both)
    assert run.add(0.92, 1).phase == "Inconclusive"  # neither condition
    assert run.phase == "Running"
    assert run.add(None, 2).phase == "Inconclusive"  # no data is never a pass
    assert run.phase == "Inconclusive"


def test_argo_count_makes_a_run_successful() -> None:
    run = MetricRun(_spec(count=3))
    for i in range(2):
        run.add(0.99, i)
        assert run.phase == "Running"
    run.add(0.99, 3)
    assert run.phase == "Successful"


def test_failure_condition_only_and_consecutive_errors() -> None:
    run = MetricRun(_spec(success_condition=None, failure_condition=Condition.parse("result[0] > 0.5"),
                          consecutive_error_limit=1, count=10))
    assert run.add(0.2, 0).phase == "Successful"
    assert run.add(0.7, 1).phase == "Failed"

    def broken(_: str) -> float | None:
        raise MetricsError("Prometheus unreachable")

    run2 = MetricRun(_spec(consecutive_error_limit=1, count=10))
    run2.measure(broken, 0)
    assert run2.phase == "Running"
    run2.measure(broken, 1)
    assert run2.phase == "Error"
    assert "unreachable" in run2.measurements[-1].message


@pytest.mark.parametrize(("data", "name"), [
    ({"success_rate_min": 1.2}, "thresholds.success_rate_min"),
    ({"p95_latency_max_s": -0.1}, "thresholds.p95_latency_max_s"),
    ({"p95_latency_max_s": 0}, "thresholds.p95_latency_max_s"),
    ({"failureLimit": -1}, "thresholds.failure_limit"),
    ({"alpha": 1.5}, "thresholds.alpha"),
    ({"bogus": 1}, "thresholds.bogus"),
    ({"count": "many"}, "thresholds.count"),
    ({"interval": "ten seconds"}, "thresholds.interval"),
])
def test_thresholds_no_measurement_can_meet_are_rejected(data: dict[str, object], name: str) -> None:
    with pytest.raises(ParameterError) as err:
        Thresholds.from_mapping(data)
    assert err.value.name == name


def test_thresholds_from_chart_spelling_and_metric_specs() -> None:
    t = Thresholds.from_mapping({"success_rate_min": 0.99, "latency_p95_max_seconds": 0.3, "interval": "10s",
                                 "count": 3, "failure_limit": 1, "inconclusive_limit": 2})
    assert (t.success_rate_min, t.p95_latency_max_s, t.interval_s) == (0.99, 0.3, 10.0)
    specs = {s.name: s for s in t.metric_specs({"success_rate": "A", "latency_p95": "B", "other": "C"})}
    assert set(specs) == {"success_rate", "latency_p95"}
    assert specs["success_rate"].assess(0.985) == "Failed"
    assert specs["latency_p95"].assess(0.2) == "Successful"
    assert parse_duration("1m") == 60 and parse_duration("500ms") == 0.5
