"""Issue 14 without processes: versions agree with the charts, configs are explicit, artifacts are
validated, the DAG has the pipeline's order (parsed by the real Airflow of ``.venv-airflow``)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from clinops_lib import charts
from clinops_lib.config import PortMap, Settings
from clinops_lib.exceptions import ConfigError, ServiceError
from clinops_lib.pipeline.config import PipelineConfig
from clinops_lib.pipeline.feature_store import repo_yaml
from clinops_lib.pipeline.features import SUBJECT_FEATURES, feature_refs
from clinops_lib.services.subject_risk import SubjectRiskModel
from clinops_lib.targets.local.components import kafka_settings, pipeline_env

pytestmark = pytest.mark.unit


def _lock_pin(lock: Path, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}==(\S+)", lock.read_text(), re.M)
    assert m, f"{name} not pinned in {lock}"
    return m.group(1)


def test_kafka_and_spark_versions_come_from_the_charts() -> None:
    version, topic = kafka_settings(Settings())
    assert version == charts.subchart_values("data-ingestion", "dev")["kafka"]["version"]
    pom = (REPO / "tools/kafka/pom.xml").read_text()
    assert f"<kafka.version>{version}</kafka.version>" in pom  # what setup.sh resolves into the cache
    assert topic == "clinical-observations"
    spark = charts.subchart_values("data-processing", "dev")["spark"]["sparkVersion"]
    assert _lock_pin(REPO / "tools/pipeline/requirements.lock", "pyspark") == spark


def test_pipeline_config_is_read_once_and_refuses_a_bad_port() -> None:
    cfg = PipelineConfig.from_env({"CLINOPS_PIPELINE_DIR": "/w", "CLINOPS_PG_PORT": "26900"})
    assert cfg.jdbc_url == "jdbc:postgresql://127.0.0.1:26900/clinops"
    assert cfg.feast_repo == Path("/w/feast")
    with pytest.raises(ConfigError, match="CLINOPS_PG_PORT"):
        PipelineConfig.from_env({"CLINOPS_PIPELINE_DIR": "/w", "CLINOPS_PG_PORT": "x; rm"})
    with pytest.raises(ConfigError, match="CLINOPS_PIPELINE_DIR"):
        PipelineConfig.from_env({})


def test_jobs_get_the_platforms_addresses(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, ports=PortMap(26800))
    env = pipeline_env(settings)
    cfg = PipelineConfig.from_env(env)
    assert cfg.pg_port == 26800 and cfg.mlflow_url == "http://127.0.0.1:26807"
    assert cfg.kafka_bootstrap == "127.0.0.1:26805"
    text = repo_yaml(cfg)
    assert '"127.0.0.1:26801,db=1"' in text and str(tmp_path / "pipeline" / "feast" / "registry.db") in text


def _artifact(**changes: object) -> dict[str, object]:
    n = len(SUBJECT_FEATURES)
    doc: dict[str, object] = {
        "format": "clinops-subject-logreg/1",
        "version": "v1",
        "feature_view": "subject_vitals",
        "features": list(SUBJECT_FEATURES),
        "mean": [1.0] * n,
        "scale": [2.0] * n,
        "coef": [0.5] * n,
        "intercept": -1.0,
    }
    doc.update(changes)
    return doc


def test_subject_model_scores_by_name_and_refuses_bad_artifacts() -> None:
    model = SubjectRiskModel.from_artifact(_artifact())
    assert model.feature_refs() == feature_refs()
    at_mean = {n: 1.0 for n in SUBJECT_FEATURES}
    assert model.score(at_mean) == pytest.approx(1 / (1 + 2.718281828459045))
    higher = {**at_mean, "alt_u_l_max": 5.0}
    assert model.score(higher) > model.score(at_mean)
    with pytest.raises(ServiceError, match="alt_u_l_max"):
        model.score({**at_mean, "alt_u_l_max": None})
    for bad, match in (
        (_artifact(format="pickle"), "format"),
        (_artifact(scale=[0.0] * len(SUBJECT_FEATURES)), "scale"),
        (_artifact(coef=[1.0]), "coef has 1"),
        ("[]", "JSON object"),
    ):
        with pytest.raises(ServiceError, match=match):
            SubjectRiskModel.from_artifact(bad)


def test_the_dag_runs_spark_then_the_quality_gate_then_materialize_train_register() -> None:
    python = REPO / ".venv-airflow" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} missing: run `bash scripts/setup.sh`")
    code = (
        "import json, sys; sys.path.insert(0, 'clinops_lib/pipeline/dags'); import clinops_pipeline as m;"
        "d = m.dag; print(json.dumps({t.task_id: sorted(t.downstream_task_ids) for t in d.tasks}))"
    )
    out = subprocess.run(
        [str(python), "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"AIRFLOW_HOME": "/tmp/clinops-airflow-parse", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    graph = json.loads(out.stdout.strip().splitlines()[-1])
    assert graph == {
        "spark_features": ["data_quality"],
        "data_quality": ["feast_materialize"],  # the gate: nothing reaches Feast or training unchecked
        "feast_materialize": ["train"],
        "train": ["register"],
        "register": [],
    }


def _bounds(model: type, field: str) -> dict[str, object]:
    """A pydantic field's numeric bounds as expect_column_values_to_be_between's keyword arguments."""
    out: dict[str, object] = {}
    for m in model.model_fields[field].metadata:  # type: ignore[attr-defined]
        for attr, key in (("ge", "min_value"), ("gt", "min_value"), ("le", "max_value"), ("lt", "max_value")):
            if getattr(m, attr, None) is not None:
                out[key] = float(getattr(m, attr))
                if attr in ("gt", "lt"):
                    out["strict_min" if attr == "gt" else "strict_max"] = True
    return out


def test_the_quality_suites_use_the_gateways_bounds_and_the_jobs_columns() -> None:
    from clinops_lib.pipeline.quality import SUITES, load_suite
    from clinops_lib.pipeline.spark_job import OBSERVATIONS_QUERY
    from clinops_lib.services.gateway import Labs, Observation, Vitals

    clean = load_suite("clean_observations")["expectations"]
    between = {e["kwargs"]["column"]: {k: v for k, v in e["kwargs"].items() if k != "column"}
               for e in clean if e["type"] == "expect_column_values_to_be_between"}
    vitals = ("systolic_bp", "diastolic_bp", "heart_rate", "temperature_c", "weight_kg")
    labs = ("alt_u_l", "creatinine_mg_dl")
    for model, fields in ((Vitals, vitals), (Labs, labs), (Observation, ("visit",))):
        for name in fields:
            got = {k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                   for k, v in between[name].items()}
            assert got == _bounds(model, name), name
    not_null = {e["kwargs"]["column"] for e in clean if e["type"] == "expect_column_values_to_not_be_null"}
    assert set(Vitals.model_fields) <= not_null  # complete vitals
    match_set = "expect_table_columns_to_match_set"
    columns = next(e["kwargs"]["column_set"] for e in clean if e["type"] == match_set)
    select = OBSERVATIONS_QUERY.split("SELECT", 1)[1].split("FROM", 1)[0]
    query_columns = {item.split()[-1] for item in select.split(",")}  # a column, or "expression AS name"
    assert set(columns) == query_columns  # what the Spark job reads (and keeps) is what the gate expects
    feats = load_suite("subject_features")["expectations"]
    columns = next(e["kwargs"]["column_set"] for e in feats if e["type"] == match_set)
    from clinops_lib.pipeline.features import ENTITY, LABEL, TIMESTAMP

    assert columns == [ENTITY, *SUBJECT_FEATURES, LABEL, TIMESTAMP]
    with pytest.raises(ValueError, match="unknown expectation suite"):
        load_suite("../clean_observations")
    assert list(SUITES) == ["clean_observations", "subject_features"]


def test_the_data_quality_component_runs_on_the_local_target_and_names_what_it_checks() -> None:
    from clinops_lib.catalog import component

    row = component("data-quality (great-expectations)")
    assert row.runs_on("local") and row.level == 2
    assert "data_quality task succeeded" in row.health
    assert "not on this target" not in row.what_on("local")


def test_prometheus_sends_alerts_to_the_local_alertmanager(tmp_path: Path) -> None:
    from clinops_lib.targets.local.components import Prometheus

    settings = Settings(state_dir=tmp_path, ports=PortMap(26800))
    cfg = Prometheus(settings).config()
    targets = cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]  # type: ignore[index]
    assert targets == ["127.0.0.1:26809"]
    rules = charts.prometheus_rules_file().read_text()
    assert "alert: ClinopsCanaryHighErrorRate" in rules and 'track="canary"' in rules


def test_kafka_listens_on_loopback_and_formats_in_its_child(tmp_path: Path) -> None:
    from clinops_lib.targets.local.components import Kafka

    kafka = Kafka(Settings(state_dir=tmp_path, ports=PortMap(26800)))
    if not (kafka.libs / f"kafka_2.13-{kafka.version()}.jar").exists():
        pytest.fail(f"Kafka jars missing in {kafka.libs}: run `bash scripts/setup.sh`")
    kafka.prepare()
    props = (kafka.dir / "server.properties").read_text()
    assert "listeners=PLAINTEXT://127.0.0.1:26805,CONTROLLER://127.0.0.1:26806" in props
    spec = kafka.spec()
    assert spec.ports == [26805, 26806]
    script = spec.argv[-1]
    assert "kafka.tools.StorageTool format" in script and script.index("StorageTool") < script.index(
        "kafka.Kafka"
    )
    assert "-Djava.net.preferIPv4Stack=true" in script


def test_pipeline_venv_components_share_one_base_that_names_a_missing_venv(tmp_path: Path) -> None:
    """D2: MLflow, Feast and Airflow are one kind of thing (a process from a named venv): a missing
    venv is refused before anything starts, naming the component, the venv and how to install it."""
    from clinops_lib.exceptions import PrerequisiteError
    from clinops_lib.targets.local.components import Airflow, FeastServer, MLflow, VenvProcess

    settings = Settings(state_dir=tmp_path / "state", project_root=tmp_path, ports=PortMap(6600))
    for cls, venv in ((MLflow, "pipeline"), (FeastServer, "pipeline"), (Airflow, "airflow")):
        assert issubclass(cls, VenvProcess)
        comp = cls(settings)
        assert comp.python() == tmp_path / f".venv-{venv}" / "bin" / "python"
        with pytest.raises(PrerequisiteError, match=rf"{comp.name}: .*\.venv-{venv}.*scripts/setup\.sh"):
            comp.prepare()
    # Airflow's tasks run in the pipeline venv: with only its own venv it is still refused, naming that one
    (tmp_path / ".venv-airflow" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-airflow" / "bin" / "python").touch()
    with pytest.raises(PrerequisiteError, match=r"airflow: .*\.venv-pipeline"):
        Airflow(settings).prepare()


def test_feast_server_applies_and_serves_in_one_process(tmp_path: Path) -> None:
    """Feast is imported once at start: the component runs ``feature_store serve`` (apply, then the
    feature server) instead of ``apply && feast serve``; a bad port is refused (exit 2)."""
    from clinops_lib.pipeline import feature_store
    from clinops_lib.targets.local.components import FeastServer

    settings = Settings(state_dir=tmp_path / "state", project_root=tmp_path, ports=PortMap(6600))
    spec = FeastServer(settings).spec()
    assert spec.argv[1:4] == ["-m", "clinops_lib.pipeline.feature_store", "serve"]
    assert spec.argv[spec.argv.index("--port") + 1] == str(settings.ports.feast)
    assert spec.argv[spec.argv.index("--host") + 1] == "127.0.0.1"
    with pytest.raises(SystemExit) as exc:
        feature_store.main(["serve", "--port", "0"])
    assert exc.value.code == 2


class _FakeAlertmanager:
    """Stands in for the Alertmanager component (the real one is exercised by the e2e drills):
    replays a scripted list of API answers, an exception meaning "unreachable"."""

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.calls = 0

    def alerts(self) -> list[dict[str, object]]:
        from clinops_lib.exceptions import ComponentError

        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise ComponentError("alertmanager", str(answer), "alertmanager.log")
        return answer  # type: ignore[return-value]


def test_alert_watch_keeps_an_alert_after_alertmanager_stops_listing_it() -> None:
    """The canary alert resolves seconds after an abort: the watch keeps it as last seen, one entry
    per fingerprint, ignores other alert names and counts (never raises) failed reads."""
    from clinops_lib.targets.local.components import AlertWatch

    labels = {"alertname": "ClinopsCanaryHighErrorRate", "version": "2-drill"}
    canary = {"fingerprint": "f1", "labels": labels, "status": {"state": "active"},
              "startsAt": "2026-12-01T15:00:00Z", "annotations": {}}
    other = {"fingerprint": "f2", "labels": {"alertname": "Watchdog"}, "status": {"state": "active"}}
    am = _FakeAlertmanager([[other], [canary, other], RuntimeError("connection refused"), [canary], [other]])
    watch = AlertWatch(am, "ClinopsCanaryHighErrorRate")  # type: ignore[arg-type]
    for _ in range(5):
        watch.poll()
    seen = watch.seen()
    assert [a["fingerprint"] for a in seen] == ["f1"]
    assert seen[0]["labels"] == canary["labels"] and seen[0]["status"] == {"state": "active"}
    assert seen[0]["seen_first"] <= seen[0]["seen_last"]  # type: ignore[operator]
    assert watch.failed_reads == 1 and "connection refused" in watch.last_error
    # as a context manager it polls in a thread and reads once more on exit
    am2 = _FakeAlertmanager([[canary]])
    with AlertWatch(am2, "ClinopsCanaryHighErrorRate", interval=0.01) as w2:  # type: ignore[arg-type]
        pass
    assert am2.calls >= 2 and len(w2.seen()) == 1
