"""The judge's Argo limit semantics and thresholds (the statistics: tests/test_anytime.py)."""

from __future__ import annotations

import pytest

from clinops_lib.drills.judge import Condition, MetricRun, MetricSpec, Thresholds, parse_duration
from clinops_lib.exceptions import MetricsError, ParameterError

pytestmark = pytest.mark.unit


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
