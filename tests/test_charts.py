"""The charts render with the real Helm SDK, lint clean and validate against real schemas."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from clinops_lib import _chart_checks as checks
from clinops_lib import charts
from clinops_lib.charts.render import _parse_manifests as parse_manifests
from clinops_lib.config import Settings, project_root
from clinops_lib.exceptions import ChartError, ConfigError

pytestmark = pytest.mark.component

ROOT = project_root()
ENVS = charts.ENVIRONMENTS


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {env: charts.render(env) + charts.render_gitops(env) for env in ENVS}


@pytest.mark.parametrize("kube", [None, checks.OLDEST_KUBERNETES_VERSION])
@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("chart", [charts.CHART_NAME, charts.GITOPS_CHART_NAME])
def test_lint_has_no_errors_or_warnings(env: str, chart: str, kube: str | None) -> None:
    assert charts.lint(env, name=chart, kube_version=kube) == []


@pytest.mark.parametrize("env", ENVS)
def test_render_every_environment_has_every_level(env: str, rendered: dict[str, list[dict]]) -> None:
    sources = {o["metadata"]["annotations"]["clinops.io/source"] for o in rendered[env]}
    for level in charts.LEVELS:
        assert any(f"/charts/{level}/templates/" in s for s in sources), f"{level} rendered nothing in {env}"
    kinds = {o["kind"] for o in rendered[env]}
    for kind in ("Rollout", "AnalysisTemplate", "Job", "CronJob", "SparkApplication", "Kafka",
                 "PeerAuthentication", "AuthorizationPolicy", "NetworkPolicy", "ExternalSecret",
                 "ClusterSecretStore", "PrometheusRule", "ServiceMonitor", "HorizontalPodAutoscaler",
                 "PodDisruptionBudget", "Gateway", "VirtualService", "DestinationRule",
                 "AppProject", "Application"):
        assert kind in kinds, f"{kind} missing from the {env} render"


@pytest.mark.parametrize("env", ENVS)
def test_every_object_validates_against_kubernetes_and_crd_schemas(
        env: str, rendered: dict[str, list[dict]]) -> None:
    # crd_schema_dir raises (the test fails) when ../shared/schemas/crds is missing.
    assert checks.schema_errors(rendered[env], ROOT) == []


def test_schema_validation_rejects_unknown_fields(rendered: dict[str, list[dict]]) -> None:
    """The validators are strict: an unknown field in a core or a custom object is an error."""
    rollout = next(o for o in rendered["dev"] if o["kind"] == "Rollout")
    bad_rollout = yaml.safe_load(yaml.safe_dump(rollout))
    bad_rollout["spec"]["strategy"].setdefault("canary", {})["stepz"] = []
    hpa = next(o for o in rendered["dev"] if o["kind"] == "HorizontalPodAutoscaler")
    bad_hpa = yaml.safe_load(yaml.safe_dump(hpa))
    bad_hpa["spec"]["maxReplica"] = 3
    errors = checks.schema_errors([bad_rollout, bad_hpa], ROOT)
    assert any("stepz" in e for e in errors)
    assert any("maxReplica" in e for e in errors)


def test_missing_crd_schema_folder_fails_rather_than_skips(tmp_path: Path) -> None:
    with pytest.raises(ChartError, match="CRD schema folder missing"):
        checks.crd_schema_dir(tmp_path / "project")


def test_prometheus_rules_file_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is required"
    path = charts.prometheus_rules_file()
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    groups = yaml.safe_load(path.read_text())["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {"service:request_success_rate:ratio_rate1m", "service:request_latency_seconds:p95_1m"} <= records
    assert {"ClinopsHighErrorRate", "ClinopsHighLatencyP95", "ClinopsTargetDown"} <= alerts


def test_third_party_dependencies_are_pinned_declared_and_not_vendored() -> None:
    deps = charts.declared_dependencies()
    names = {d["name"] for d in deps}
    assert {"postgresql", "redis", "strimzi-kafka-operator", "minio", "kube-prometheus-stack", "airflow",
            "spark-operator", "mlflow", "opensearch", "fluent-bit"} <= names
    for d in deps:
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(d["version"])), f"{d['name']}: version not pinned exactly"
        assert str(d.get("repository", "")).startswith(("https://", "oci://")), f"{d['name']}: no repository"
        assert d.get("condition") == f"{d['name']}.enabled", f"{d['name']}: condition flag missing"
    # Nothing third-party is committed: every declared dependency is absent from charts/; the only
    # archives are the library chart packed by build_dependencies, and git ignores them.
    assert {d["name"] for d in charts.missing_dependencies()} == names
    built = set(charts.build_dependencies())
    assert set((ROOT / "charts").rglob("*.tgz")) == built
    tracked = subprocess.run(["git", "ls-files", "charts"], cwd=ROOT, capture_output=True, text=True,
                             check=True)
    assert not [f for f in tracked.stdout.splitlines() if f.endswith(".tgz")]
    ignored = subprocess.run(["git", "check-ignore", *map(str, built)], cwd=ROOT, capture_output=True,
                             text=True)
    assert len(ignored.stdout.splitlines()) == len(built), "a built library archive is not git-ignored"


def test_storage_sizes_for_stateful_dependencies() -> None:
    infra = charts.subchart_values("infrastructure", "prod")
    assert infra["postgresql"]["primary"]["persistence"]["size"] == "20Gi"
    assert infra["redis"]["master"]["persistence"]["size"] == "5Gi"
    kafka = next(o for o in charts.render("prod") if o["kind"] == "Kafka")
    assert kafka["spec"]["kafka"]["storage"]["size"] == "20Gi"
    assert kafka["spec"]["zookeeper"]["storage"]["size"] == "5Gi"
    buckets = charts.env_values("prod")["global"]["buckets"]
    assert set(buckets) == {"artifacts", "logs", "features", "backups"}


def test_render_refuses_latest_image_tag() -> None:
    values = charts.env_values("dev")
    values["ml-pipeline"]["serving"]["image"]["tag"] = "latest"
    with pytest.raises(ChartError, match="tag latest is not allowed"):
        charts.render_raw("dev", values=values)


def test_unknown_environment_and_service_are_named() -> None:
    with pytest.raises(ConfigError, match="'qa'"):
        charts.render("qa")
    with pytest.raises(ChartError, match="'billing'"):
        charts.canary_steps("billing", "dev")
    with pytest.raises(ChartError, match="blueGreen"):
        charts.canary_steps("model-serving", "dev")
    with pytest.raises(ChartError, match="canary"):
        charts.blue_green("clinical-gateway", "dev")


def _copy_chart(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(ROOT / "charts", root / "charts")
    return root


def test_values_merge_like_helm_lists_replace_null_deletes(tmp_path: Path) -> None:
    root = _copy_chart(tmp_path)
    env_file = root / "charts" / charts.CHART_NAME / "values-dev.yaml"
    data = yaml.safe_load(env_file.read_text())
    data["data-ingestion"]["gateway"]["canary"]["steps"] = [{"setWeight": 25}, {"pause": {"duration": "1m"}}]
    data["global"]["analysis"]["count"] = 7
    env_file.write_text(yaml.safe_dump(data))
    assert charts.canary_steps("clinical-gateway", "dev", root) == [{"setWeight": 25},
                                                                   {"pause": {"duration": "1m"}}]
    assert charts.analysis_thresholds("dev", root)["count"] == 7
    # Helm agrees: the rendered Rollout carries exactly the merged list.
    rendered = parse_manifests(charts.render_raw("dev", root))
    rollout = next(o for o in rendered
                   if o["kind"] == "Rollout" and o["metadata"]["name"] == "clinical-gateway")
    assert rollout["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 25},
                                                              {"pause": {"duration": "1m"}}]
    # null in an environment file deletes the subchart's default, in both readers.
    data["data-ingestion"]["gateway"]["image"] = None
    env_file.write_text(yaml.safe_dump(data))
    assert "image" not in charts.subchart_values("data-ingestion", "dev", root)["gateway"]
    with pytest.raises(ChartError, match="clinical-gateway"):
        charts.service_versions("dev", root)
    with pytest.raises(ChartError, match="helm render"):
        charts.render_raw("dev", root)


def test_service_versions_reject_unpinned_tags(tmp_path: Path) -> None:
    root = _copy_chart(tmp_path)
    env_file = root / "charts" / charts.CHART_NAME / "values-staging.yaml"
    data = yaml.safe_load(env_file.read_text())
    data["data-ingestion"]["gateway"]["image"]["tag"] = "latest"
    env_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ChartError, match="clinical-gateway in staging"):
        charts.service_versions("staging", root)


def test_durations_and_pause_scaling() -> None:
    assert charts.duration_seconds("15m") == 900
    assert charts.duration_seconds("1h30m") == 5400
    assert charts.duration_seconds("30s") == 30
    assert charts.duration_seconds(45) == 45
    with pytest.raises(ChartError, match="'15 minutes'"):
        charts.duration_seconds("15 minutes")
    steps = charts.scaled_steps(charts.canary_steps("clinical-gateway", "prod"), 0.01)
    pauses = [s["pause"]["seconds"] for s in steps if "pause" in s]
    assert pauses == pytest.approx([9.0, 6.0])
    with pytest.raises(ChartError, match="pause_scale"):
        charts.scaled_steps(steps, 0)


def test_cli_render_writes_manifests_and_lint_passes(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(project_root=ROOT, state_dir=tmp_path / "state", evidence_dir=tmp_path / "ev")
    out = tmp_path / "out"
    args = argparse.Namespace(action="render", env="staging", out=str(out))
    assert charts.chart_from_cli(args, settings) == 0
    docs = [d for d in yaml.safe_load_all((out / "clinical-mlops-staging.yaml").read_text()) if d]
    assert len(docs) == len(charts.render("staging"))
    apps = [d for d in yaml.safe_load_all((out / "gitops-staging.yaml").read_text()) if d]
    assert sum(1 for a in apps if a["kind"] == "Application") == len(charts.LEVELS) + 1
    assert charts.chart_from_cli(argparse.Namespace(action="lint", env="prod", out=None), settings) == 0
    assert "0 error(s)" in capsys.readouterr().err


def test_lint_reports_a_broken_template(tmp_path: Path) -> None:
    root = _copy_chart(tmp_path)
    tpl = root / "charts" / charts.CHART_NAME / "charts" / "ml-pipeline" / "templates" / "training.yaml"
    tpl.write_text(tpl.read_text().replace("{{- $t := .Values.training -}}", "{{- $t := .Values.training "))
    findings = charts.lint("dev", root)
    assert any(f.startswith("ERROR") and "training.yaml" in f for f in findings), findings
    with pytest.raises(ChartError, match="helm render"):
        charts.render("dev", root)


def test_parse_manifests_takes_null_metadata_maps_of_third_party_charts() -> None:
    """bitnami and MLflow templates render ``annotations:`` (null); the parser still labels the source."""
    objects = parse_manifests({"dep/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\n"
                                                               "metadata:\n  name: x\n  annotations:\n"})
    assert objects[0]["metadata"]["annotations"] == {"clinops.io/source": "dep/templates/cm.yaml"}
