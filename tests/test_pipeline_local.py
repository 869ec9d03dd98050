"""Issue 14's data path end to end on real components (component tier, slow):

gateway -> PostgreSQL + one Kafka event per observation (persisted by the consumer group) ->
the Airflow DAG run (Spark -> S3 Parquet, data-quality gate (great-expectations), Feast materialize
-> Redis, train -> MLflow run, register -> registry alias) -> model-serving scores a subject with
its online features and the version the alias points at. Expected values are computed here from
the posted payloads and the registered artifact, independently of the code under test. Then the
gate's other side: a row written around the gateway's validation (°F in the °C column) fails the
next run at ``data_quality``, before Feast and training, and the registry alias does not move.

Ports: a block from the harness (tests/ports.py), state under /tmp.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from conftest import enterable_tmpdir
from ports import PortAllocator

from clinops_lib.config import Settings
from clinops_lib.pipeline.features import OBJECT_KEY, staged
from clinops_lib.services.subject_risk import SubjectRiskModel
from clinops_lib.services.synthetic import observation_payload
from clinops_lib.targets.local.components import AWS_ENV, pipeline_env
from clinops_lib.targets.local.target import LocalTarget

pytestmark = [pytest.mark.component, pytest.mark.slow]

SUBJECTS = 40
VISITS = 4


@pytest.fixture(scope="module")
def platform(port_allocator: PortAllocator) -> Iterator[LocalTarget]:
    root = enterable_tmpdir("clinops-pipeline-")
    block = port_allocator.block()
    target = LocalTarget(Settings(state_dir=root / "state", ports=block.portmap()))
    try:
        target.up([0, 1, 2, 3, 4, 5])
        yield target
    finally:
        target.down(purge=True)
        target.close()
        port_allocator.release(block)
        shutil.rmtree(root, ignore_errors=True)  # down(purge) empties the state dir, not its parent


def _s3(platform: LocalTarget) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=platform.settings.localstack_url,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def _observations(seed: int) -> list[dict[str, object]]:
    """SUBJECTS subjects with VISITS visits each; every payload valid for the gateway."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for s in range(SUBJECTS):
        first = observation_payload(rng, now=now)
        subject = f"{first['site_id']}-T{seed % 1000:03d}{s:03d}"
        for visit in range(1, VISITS + 1):
            body = observation_payload(rng, now=now)
            body.update(study_id=first["study_id"], site_id=first["site_id"], subject_id=subject, visit=visit)
            out.append(body)
    return out


def test_a_subject_is_scored_from_gateway_data_through_spark_feast_and_the_dags_model(
    platform: LocalTarget,
) -> None:
    settings = platform.settings
    observations = _observations(seed=14)
    with httpx.Client(base_url=platform.service_url("clinical-gateway"), timeout=10) as gw:
        ids = []
        for body in observations:
            r = gw.post("/v1/observations", json=body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

    # Level 1: every stored observation has its Kafka event, persisted by the consumer group
    dsn = f"postgresql://clinops@127.0.0.1:{settings.ports.postgres}/clinops"
    from clinops_lib.targets.local import supervisor as sup

    def events_persisted() -> bool:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM observation_events WHERE observation_id = ANY(%s)", (ids,)
            ).fetchone()
        return row is not None and row[0] == len(ids)

    sup.wait_for(
        "every observation's Kafka event in observation_events", events_persisted, timeout=120, interval=1.0
    )

    # Levels 2-5: one DAG run
    run = platform.run_pipeline("test-data-path", timeout=1500)
    assert run.state == "success", [(t.task_id, t.state) for t in run.tasks]
    assert [t.task_id for t in run.tasks] == [
        "spark_features", "data_quality", "feast_materialize", "train", "register"
    ]
    assert all(t.state == "success" for t in run.tasks)
    validation = platform.pipeline_validation("test-data-path")
    assert validation is not None
    assert set(validation["results"]) == {"clean_observations", "subject_features"}
    assert all(r["success"] for r in validation["results"].values())
    clean = next(o for o in validation["objects"] if o["suite"] == "clean_observations")
    assert clean["rows"] == len(observations)  # every posted visit survived cleaning, none twice
    assert all(o["uri"].split("/", 3)[3].startswith("staging/") for o in validation["objects"])
    assert all(o["published"].startswith("s3://") for o in validation["objects"])  # passed -> published
    assert "PASSED" in validation["summary_markdown"]
    quality = next(s for s in platform.status() if s.component == "data-quality (great-expectations)")
    assert quality.health == "healthy" and "test-data-path" in quality.detail
    from clinops_lib.pipeline.quality import SUITES, load_suite

    every = sum(len(load_suite(suite)["expectations"]) for suite in SUITES)
    assert f"; {every} expectations met" in quality.detail  # both suites, every expectation

    mlflow = f"http://127.0.0.1:{settings.ports.mlflow}"
    alias = httpx.get(
        f"{mlflow}/api/2.0/mlflow/registered-models/alias",
        params={"name": "clinops-subject-risk", "alias": "champion"},
        timeout=10,
    ).json()["model_version"]
    mlflow_run = httpx.get(
        f"{mlflow}/api/2.0/mlflow/runs/get", params={"run_id": alias["run_id"]}, timeout=10
    ).json()["run"]
    tags = {t["key"]: t["value"] for t in mlflow_run["data"]["tags"]}
    assert tags["clinops.dag_run"] == "test-data-path"  # the version the alias names came from this DAG run
    source = alias["source"].removeprefix("mlflow-artifacts:/")
    artifact = httpx.get(
        f"{mlflow}/api/2.0/mlflow-artifacts/artifacts/{source}/model.json", timeout=10
    ).json()
    model = SubjectRiskModel.from_artifact(artifact)

    # Level 4: model-serving scores one subject from its online features
    subject = str(observations[0]["subject_id"])
    mine = [o for o in observations if o["subject_id"] == subject]
    with httpx.Client(base_url=platform.service_url("model-serving"), timeout=30) as serving:
        r = serving.post(f"/v1/subjects/{subject}/risk")
        assert r.status_code == 200, r.text
        scored = r.json()
        assert serving.post("/v1/subjects/NOBODY-0000/risk").status_code == 404
    assert scored["registry_version"] == alias["version"]
    features = scored["features"]
    assert features["visits"] == VISITS
    assert features["systolic_bp_mean"] == pytest.approx(
        statistics.mean(o["vitals"]["systolic_bp"] for o in mine)
    )
    assert features["temperature_c_max"] == pytest.approx(max(o["vitals"]["temperature_c"] for o in mine))
    assert features["alt_u_l_max"] == pytest.approx(max(o["labs"]["alt_u_l"] for o in mine))
    assert scored["risk"] == pytest.approx(model.score(features), abs=1e-6)
    print(
        json.dumps(
            {
                "subject": subject,
                "risk": scored["risk"],
                "version": alias["version"],
                "tasks": [(t.task_id, t.state, t.duration) for t in run.tasks],
            }
        )
    )


def test_a_row_written_around_the_gateway_fails_the_gate_before_training(platform: LocalTarget) -> None:
    settings = platform.settings
    mlflow = f"http://127.0.0.1:{settings.ports.mlflow}"

    def champion() -> object:
        r = httpx.get(f"{mlflow}/api/2.0/mlflow/registered-models/alias",
                      params={"name": "clinops-subject-risk", "alias": "champion"}, timeout=10)
        return r.json().get("model_version", {}).get("version") if r.status_code == 200 else r.status_code

    before = champion()
    s3 = _s3(platform)
    bucket = pipeline_env(settings)["CLINOPS_BUCKET_FEATURE_STORE"]
    published_before = s3.head_object(Bucket=bucket, Key=OBJECT_KEY)
    dsn = f"postgresql://clinops@127.0.0.1:{settings.ports.postgres}/clinops"
    vitals = {"systolic_bp": 124, "diastolic_bp": 80, "heart_rate": 70, "temperature_c": 98.6,
              "weight_kg": 70.0}
    with psycopg.connect(dsn) as conn:  # a bulk load that skipped the gateway: °F in the °C column
        conn.execute(
            "INSERT INTO clinical_observations (study_id, site_id, subject_id, visit, observed_at,"
            " adverse_event, vitals, labs, gateway_version)"
            " VALUES ('CT-BULK', 'S99', 'S99-BULK-0001', 1, now(), false, %s, NULL, 'bulk-load')",
            (json.dumps(vitals),),
        )
    run = platform.run_pipeline("test-bad-row", timeout=1500)
    states = {t.task_id: t.state for t in run.tasks}
    assert run.state == "failed", states
    assert states["spark_features"] == "success" and states["data_quality"] == "failed"
    assert {states[t] for t in ("feast_materialize", "train", "register")} == {"upstream_failed"}
    validation = platform.pipeline_validation("test-bad-row")
    assert validation is not None and "FAILED" in validation["summary_markdown"]
    failed = [
        (suite, r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column"))
        for suite, result in validation["results"].items()
        for r in result["results"]
        if not r["success"]
    ]
    assert ("clean_observations", "expect_column_values_to_be_between", "temperature_c") in failed
    assert {column for _, _, column in failed} == {"temperature_c", "temperature_c_max"}, failed
    assert champion() == before  # no model was trained or registered from the unchecked data
    assert not any(o["published"] for o in validation["objects"])
    published_after = s3.head_object(Bucket=bucket, Key=OBJECT_KEY)  # Feast's source: the last good table
    assert (published_after.get("VersionId"), published_after["ETag"]) == (
        published_before.get("VersionId"), published_before["ETag"]
    )
    staged_table = s3.head_object(Bucket=bucket, Key=staged(OBJECT_KEY))  # the failed run's own table
    assert staged_table["ETag"] != published_after["ETag"]
    quality = next(s for s in platform.status() if s.component == "data-quality (great-expectations)")
    assert quality.health == "unhealthy" and "test-bad-row" in quality.detail
    assert "not met: clean_observations: expect_column_values_to_be_between(temperature_c)" in quality.detail
