"""The catalog: each fact once, and everything that needs it reads it from there (issue 10)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from clinops_lib import catalog, charts
from clinops_lib.drills import CanaryConfig, validate_canary
from clinops_lib.drills.loadgen import RequestRecord, summarize
from clinops_lib.drills.plots import failed_requests_frame, version_summary_frame
from clinops_lib.drills.result import DrillResult
from clinops_lib.exceptions import ConfigError, ParameterError
from clinops_lib.services._common import ServiceConfig

pytestmark = pytest.mark.unit


def test_percentile_is_numpys_default_definition() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 101, 1000):
        xs = [rng.lognormvariate(-4, 1) for _ in range(n)]
        for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
            assert catalog.percentile(xs, q) == pytest.approx(float(np.quantile(xs, q)), rel=1e-12)
    assert catalog.percentile([], 0.95) is None
    with pytest.raises(ValueError):
        catalog.percentile([1.0], 1.5)


def test_one_p95_for_the_same_requests_in_load_summary_and_evidence_table() -> None:
    rng = random.Random(3)
    records = [RequestRecord(seq=i, label="user", scheduled=i / 100, sent=i / 100,
                             done=i / 100 + rng.uniform(0.001, 0.2), status=200, version="1.0.0")
               for i in range(203)]
    lat = [r.latency_s for r in records]
    load = summarize(records, 100.0, "user")
    res = DrillResult("canary", "clinical-gateway", "1.0.0", "1.1.0", "PROMOTED", "", 0.0, 2.0, 2.0, None, [],
                      [], records, {}, [], 1.0)
    table = version_summary_frame(res)
    assert load.p95_s == catalog.percentile(lat, 0.95)
    assert table["p95_ms"].iloc[0] == pytest.approx(load.p95_s * 1000)


def test_failed_requests_table_lists_each_failure_with_its_error_and_counts_match() -> None:
    """The evidence table behind "failed user requests" checks: one row per failure (no answer or
    a 5xx), in send order, with the client's error text; dropped requests are not failures."""
    records = [RequestRecord(seq=i, label="user", scheduled=10 + i, sent=10 + i, done=10.1 + i, status=200,
                             version="2.1.0") for i in range(5)]
    records[3] = RequestRecord(3, "user", 13, 13, 18, 0, "", "timeout after 5.0s")
    records[1] = RequestRecord(1, "user", 11, 11, 11.2, 503, "2.1.0", "")
    records.append(RequestRecord(5, "user", 15, 15, 15, -1, "", "dropped: 512 requests in flight"))
    res = DrillResult("blue-green", "model-serving", "2.1.0", "2.2.0", "PROMOTED", "", 10.0, 16.0, 16.0, None,
                      [], [], records, {}, [], 1.0)
    table = failed_requests_frame(res)
    assert table["seq"].tolist() == [1, 3]
    assert table["status"].tolist() == [503, 0]
    assert table["error"].tolist() == ["", "timeout after 5.0s"]
    assert table["sent_s"].tolist() == [1.0, 3.0] and table["seconds"].tolist() == [0.2, 5.0]
    assert len(table) == version_summary_frame(res)["failed"].sum()
    assert failed_requests_frame(res, limit=1)["seq"].tolist() == [1]


@pytest.mark.parametrize("version", ["", "-1", "a/b", "1.0 ", "v" * 65, "1.0;x", "é", "1.0+build"])
def test_one_version_rule_for_drills_and_services(version: str) -> None:
    with pytest.raises(ParameterError) as err:
        catalog.check_version(version, "canary_version")
    assert err.value.name == "canary_version"
    with pytest.raises(ParameterError, match="is not a version"):
        validate_canary(CanaryConfig(service="clinical-gateway", canary_version=version))
    with pytest.raises(ConfigError, match="CLINOPS_SERVICE_VERSION"):
        ServiceConfig("clinical-gateway", version=version or "-")


@pytest.mark.parametrize("version", ["1.0.0", "2.1.0-drill1700000000", "1.0.0-rc.1", "v" * 64])
def test_good_versions_pass_everywhere(version: str) -> None:
    assert catalog.check_version(version) == version
    assert ServiceConfig("clinical-gateway", version=version).version == version


def test_levels_have_one_meaning_and_the_charts_derive_their_subcharts() -> None:
    assert charts.LEVELS == tuple(lv.chart for lv in catalog.LEVELS)
    assert [lv.number for lv in catalog.LEVELS] == list(range(len(catalog.LEVELS)))
    for lv in catalog.LEVELS:
        assert (charts.chart_dir() / "charts" / lv.chart).is_dir(), lv
        namespaces = charts.env_values("dev")["global"]["namespaces"]
        assert lv.namespace_key in namespaces, lv


def test_every_service_is_a_component_of_its_level_and_has_chart_values() -> None:
    for s in catalog.SERVICES:
        assert s.name in [c.name for c in catalog.level(s.level).components]
    for env in catalog.ENVIRONMENTS:
        assert list(charts.service_versions(env)) == list(catalog.service_names())
    with pytest.raises(ParameterError, match="unknown service .billing.; known: clinical-gateway, model-"):
        catalog.service("billing")


def test_built_images_come_from_the_catalog_and_the_charts_pin_them() -> None:
    from clinops_lib.clusters.debian.images import SERVICE_REPOSITORIES, chart_references
    from clinops_lib.config import project_root

    built = catalog.built_images()
    # every online service is built from its own Dockerfile, and so is the training job
    assert set(built) == {*catalog.service_names(), "training-job"}
    assert SERVICE_REPOSITORIES == built  # the cluster's image builder keeps no list of its own
    for name in built:
        assert (project_root() / "services" / name / "Dockerfile").is_file()
    for env in catalog.ENVIRONMENTS:
        refs = chart_references(project_root(), env)
        assert {n: r.rsplit("/", 1)[-1].split(":")[0] for n, r in refs.items()} == built


def test_environments_are_checked_against_the_catalog() -> None:
    for env in catalog.ENVIRONMENTS:
        assert catalog.check_environment(env) == env
    with pytest.raises(ConfigError, match="unknown environment 'qa'; known: dev, staging, prod"):
        catalog.check_environment("qa")
