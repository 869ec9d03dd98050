"""The charts on the clusters they meet: the clinops-common library chart, API versions from the
Kubernetes version (1.20 and current), the local-cluster profile (no Istio, basic canary, external
Level 0, local images) and the switches it is made of. Offline, with the real Helm SDK."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from clinops_lib import _chart_checks as checks
from clinops_lib import charts
from clinops_lib.charts.render import _parse_manifests as parse_manifests
from clinops_lib.charts.render import _render_chart as render_chart
from clinops_lib.config import PortMap, project_root
from clinops_lib.exceptions import ChartError, ConfigError

ROOT = project_root()
ENVS = charts.ENVIRONMENTS
OLD, CURRENT = checks.OLDEST_KUBERNETES_VERSION, checks.KUBERNETES_VERSION
PROFILE = "local-cluster"
#: The custom resources the Debian-built 1.20 cluster can hold: the Argo Rollouts CRDs it installs.
CLUSTER_CRDS = {("argoproj.io/v1alpha1", "Rollout"), ("argoproj.io/v1alpha1", "AnalysisTemplate")}

pytestmark = pytest.mark.unit  # the Helm SDK renders in-process: no processes


def _kinds(objects: list[dict]) -> dict[str, str]:
    return {o["kind"]: o["apiVersion"] for o in objects}


def _one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def cluster_render() -> list[dict]:
    return charts.render("dev", profiles=(PROFILE,), kube_version=OLD)


def _copy_charts(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(ROOT / "charts", root / "charts", ignore=shutil.ignore_patterns("*.tgz"))
    return root


# -- the library chart --------------------------------------------------------------------------
def test_one_library_chart_holds_the_helpers_every_chart_depends_on() -> None:
    library = yaml.safe_load((ROOT / "charts" / charts.LIBRARY_CHART_NAME / "Chart.yaml").read_text())
    assert library["type"] == "library"
    umbrella = charts.chart_dir()
    for cdir in [umbrella, *(umbrella / "charts" / level for level in charts.LEVELS)]:
        meta = yaml.safe_load((cdir / "Chart.yaml").read_text())
        deps = {d["name"]: d for d in meta["dependencies"]}
        dep = deps[charts.LIBRARY_CHART_NAME]
        assert dep["version"] == library["version"]
        source = (cdir / dep["repository"].removeprefix("file://")).resolve()
        assert source == (ROOT / "charts" / charts.LIBRARY_CHART_NAME).resolve(), cdir
        # No level defines its own helpers any more; only the library does.
        if cdir != umbrella:
            assert not (cdir / "templates" / "_helpers.tpl").exists(), cdir
            for tpl in (cdir / "templates").glob("*"):
                assert "{{- define" not in tpl.read_text() and "{{ define" not in tpl.read_text(), tpl
    umbrella_helpers = (umbrella / "templates" / "_helpers.tpl").read_text()
    assert "clinops.labels" not in umbrella_helpers  # the labels come from the library too


def test_a_level_installs_standalone_with_its_built_library() -> None:
    """What KubeTarget.up() hands to Helm: one level subchart directory and its values."""
    import helm_python as helm

    path = charts.level_chart("ml-pipeline")
    assert (path / "charts" / f"{charts.LIBRARY_CHART_NAME}-0.1.0.tgz").is_file()
    values = charts.subchart_values("ml-pipeline", "dev", profiles=(PROFILE,))
    with helm.Chart.load(str(path)) as chart:
        assert [d["name"] for d in chart.dependencies] == [charts.LIBRARY_CHART_NAME]
        rendered = chart.render(values, name="clinops-ml-pipeline", namespace="clinops-ml")
    kinds = {yaml.safe_load(doc)["kind"] for text in rendered.values() for doc in text.split("\n---")
             if doc.strip() and yaml.safe_load(doc)}
    assert {"Rollout", "AnalysisTemplate", "Service", "ServiceAccount", "Job"} <= kinds


def test_build_dependencies_rebuilds_a_changed_library_and_refuses_a_version_mismatch(tmp_path: Path) -> None:
    root = _copy_charts(tmp_path)
    built = charts.build_dependencies(root)
    assert len(built) == 1 + len(charts.LEVELS)
    before = {p: p.read_bytes() for p in built}
    # Unchanged source: nothing is repacked.
    assert {p: p.read_bytes() for p in charts.build_dependencies(root)} == before
    helper = root / "charts" / charts.LIBRARY_CHART_NAME / "templates" / "_security.tpl"
    helper.write_text(helper.read_text().replace("runAsUser: 10001\nrunAsGroup: 10001\nfsGroup",
                                                 "runAsUser: 10002\nrunAsGroup: 10001\nfsGroup"))
    future = max(p.stat().st_mtime for p in built) + 10
    os.utime(helper, (future, future))
    charts.build_dependencies(root)
    gateway = _one(charts.render("dev", root), "Rollout", "clinical-gateway")
    assert gateway["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10002
    chart_yaml = root / "charts" / charts.LIBRARY_CHART_NAME / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.2.0"))
    with pytest.raises(ChartError, match="clinops-common 0.1.0 but .* is clinops-common 0.2.0"):
        charts.build_dependencies(root)


# -- API versions from capabilities ---------------------------------------------------------------
_PROBE = """\
kubeVersion: {{ include "clinops.capabilities.kubeVersion" . }}
pdb: {{ include "clinops.capabilities.policy.apiVersion" . }}
hpa: {{ include "clinops.capabilities.hpa.apiVersion" . }}
cronjob: {{ include "clinops.capabilities.cronjob.apiVersion" . }}
ingress: {{ include "clinops.capabilities.ingress.apiVersion" . }}
hasPolicyV1: {{ .Capabilities.APIVersions.Has "policy/v1" }}
{{ include "clinops.capabilities.check" . }}
"""


@pytest.fixture(scope="module")
def probe_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A consumer of the library: one template printing every capabilities helper."""
    root = tmp_path_factory.mktemp("probe")
    shutil.copytree(ROOT / "charts" / charts.LIBRARY_CHART_NAME, root / charts.LIBRARY_CHART_NAME)
    probe = root / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "probe", "version": "0.1.0",
        "dependencies": [{"name": charts.LIBRARY_CHART_NAME, "version": "0.1.0",
                          "repository": f"file://../{charts.LIBRARY_CHART_NAME}"}]}))
    (probe / "templates" / "probe.yaml").write_text(_PROBE)
    import helm_python as helm

    (probe / "charts").mkdir()
    with helm.Chart.load(str(root / charts.LIBRARY_CHART_NAME)) as lib:
        lib.save(str(probe / "charts"))
    return probe


def _probe(chart: Path, kube_version: str, values: dict | None = None) -> dict:
    import helm_python as helm

    with helm.Chart.load(str(chart)) as c:
        out = render_chart(helm, c, {"global": {"kubeVersion": ""}, **(values or {})}, kube_version)
    return yaml.safe_load(out["probe/templates/probe.yaml"])


@pytest.mark.parametrize(("kube", "pdb", "hpa", "cronjob"), [
    ("1.20.2", "policy/v1beta1", "autoscaling/v2beta2", "batch/v1beta1"),
    ("1.21.0", "policy/v1", "autoscaling/v2beta2", "batch/v1"),
    ("1.22.17", "policy/v1", "autoscaling/v2beta2", "batch/v1"),
    ("1.23.0", "policy/v1", "autoscaling/v2", "batch/v1"),
    ("1.36.0", "policy/v1", "autoscaling/v2", "batch/v1"),
])
def test_api_versions_follow_the_kubernetes_version(probe_chart: Path, kube: str, pdb: str, hpa: str,
                                                    cronjob: str) -> None:
    got = _probe(probe_chart, kube)
    assert (got["kubeVersion"], got["pdb"], got["hpa"], got["cronjob"]) == (f"v{kube}", pdb, hpa, cronjob)
    assert got["ingress"] == "networking.k8s.io/v1"
    # Why the version decides and not APIVersions.Has: offline, Helm "has" policy/v1 even for 1.20.
    assert got["hasPolicyV1"] is True


def test_kube_version_override_and_floor(probe_chart: Path) -> None:
    got = _probe(probe_chart, "1.36.0", {"global": {"kubeVersion": "v1.20.2"}})
    assert (got["pdb"], got["cronjob"]) == ("policy/v1beta1", "batch/v1beta1")
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="older than 1.20"):
        _probe(probe_chart, "1.19.16")
    with pytest.raises(helm.HelmError, match="Kubernetes 1.19.0 is older than 1.20"):
        _probe(probe_chart, "1.36.0", {"global": {"kubeVersion": "1.19.0"}})
    with pytest.raises(ConfigError, match="'1.x'"):
        charts.render("dev", kube_version="1.x")


def test_kube_version_ranges_are_stated_and_the_same_everywhere() -> None:
    umbrella = charts.chart_dir()
    paths = [ROOT / "charts" / charts.LIBRARY_CHART_NAME, umbrella,
             *(umbrella / "charts" / level for level in charts.LEVELS)]
    ranges = {str(p): yaml.safe_load((p / "Chart.yaml").read_text()).get("kubeVersion") for p in paths}
    assert set(ranges.values()) == {">=1.20.0-0"}, ranges


@pytest.mark.parametrize("profile", [(), (PROFILE,)], ids=["plain", PROFILE])
@pytest.mark.parametrize("kube", [OLD, CURRENT])
@pytest.mark.parametrize("env", ENVS)
def test_renders_validate_for_old_and_current_kubernetes(env: str, kube: str,
                                                         profile: tuple[str, ...]) -> None:
    objects = charts.render(env, profiles=profile, kube_version=kube)
    assert checks.schema_errors(objects, ROOT, kube) == []
    kinds = _kinds(objects)
    old = kube == OLD
    assert kinds["PodDisruptionBudget"] == ("policy/v1beta1" if old else "policy/v1")
    if not profile:
        assert kinds["HorizontalPodAutoscaler"] == ("autoscaling/v2beta2" if old else "autoscaling/v2")
        assert kinds["CronJob"] == ("batch/v1beta1" if old else "batch/v1")
    else:
        assert ("Endpoints" in kinds) is old and ("EndpointSlice" in kinds) is not old


def test_schema_validation_per_version_is_strict() -> None:
    """A 1.20 render fails the current schemas (its API versions are gone) and vice versa."""
    old = charts.render("prod", kube_version=OLD)
    current = charts.render("prod", kube_version=CURRENT)
    pdb_old = next(o for o in old if o["kind"] == "PodDisruptionBudget")
    pdb_new = next(o for o in current if o["kind"] == "PodDisruptionBudget")
    assert any("no Kubernetes" in e for e in checks.core_schema_errors(pdb_old, CURRENT))
    assert any("no Kubernetes" in e for e in checks.core_schema_errors(pdb_new, OLD))
    bad = copy.deepcopy(next(o for o in old if o["kind"] == "CronJob"))
    bad["spec"]["timeZone"] = "UTC"  # a 1.25+ field
    assert any("timeZone" in e for e in checks.core_schema_errors(bad, OLD))


def test_missing_legacy_schemas_fail_rather_than_skip(tmp_path: Path) -> None:
    with pytest.raises(ChartError, match="1.20 schemas missing"):
        checks.legacy_schema_dir("1.20.2", tmp_path)


# -- the local-cluster profile --------------------------------------------------------------------
def test_profile_renders_only_what_a_1_20_cluster_without_istio_can_hold(cluster_render: list[dict]) -> None:
    custom = {(o["apiVersion"], o["kind"]) for o in cluster_render if checks.is_custom_resource(o)}
    assert custom == CLUSTER_CRDS
    kinds = {o["kind"] for o in cluster_render}
    for gone in ("VirtualService", "DestinationRule", "Gateway", "PeerAuthentication", "AuthorizationPolicy",
                 "ExternalSecret", "ClusterSecretStore", "ServiceMonitor", "PrometheusRule", "Kafka",
                 "KafkaTopic", "SparkApplication", "CronJob", "HorizontalPodAutoscaler"):
        assert gone not in kinds, f"{gone} rendered for the local cluster"
    # What stays: both Rollouts, their analysis, the training Job (its image is built locally).
    assert {"Rollout", "AnalysisTemplate", "Job", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    namespaces = [o for o in cluster_render if o["kind"] == "Namespace"]
    assert namespaces
    for ns in namespaces:
        labels = ns["metadata"]["labels"]
        assert "istio-injection" not in labels
        assert labels["kubernetes.io/metadata.name"] == ns["metadata"]["name"]


def test_profile_lints_clean_for_1_20() -> None:
    assert charts.lint("dev", profiles=(PROFILE,), kube_version=OLD) == []


def test_canary_without_traffic_router_is_the_basic_canary(cluster_render: list[dict]) -> None:
    canary = _one(cluster_render, "Rollout", "clinical-gateway")["spec"]["strategy"]["canary"]
    assert "trafficRouting" not in canary
    steps = charts.canary_steps("clinical-gateway", "dev", profiles=(PROFILE,))
    assert canary["steps"] == steps
    # The weights are replica ratios: every setWeight is a whole number of the replicas.
    replicas = _one(cluster_render, "Rollout", "clinical-gateway")["spec"]["replicas"]
    for step in steps:
        if "setWeight" in step:
            assert step["setWeight"] * replicas % 100 == 0, (step, replicas)
    assert canary["analysis"]["templates"] == [{"templateName": "success-rate"},
                                               {"templateName": "latency-p95"}]


def test_traffic_router_values_are_checked() -> None:
    values = charts.env_values("dev")
    values["global"]["istio"]["enabled"] = False
    with pytest.raises(ChartError, match="trafficRouter istio needs global.istio.enabled"):
        charts.render_raw("dev", values=values)
    values["global"]["trafficRouter"] = "linkerd"
    with pytest.raises(ChartError, match='trafficRouter "linkerd"'):
        charts.render_raw("dev", values=values)
    # Istio on, router off: mesh security stays, the routing objects go.
    values = charts.env_values("dev", overrides={"global": {"trafficRouter": "none"}})
    objects = parse_manifests(charts.render_raw("dev", values=values))
    assert "VirtualService" not in _kinds(objects)
    assert "subsets" not in _one(objects, "DestinationRule", "clinical-gateway")["spec"]
    assert {"PeerAuthentication", "AuthorizationPolicy"} <= set(_kinds(objects))


def test_blue_green_keeps_its_services_and_states_promotion_in_every_environment() -> None:
    for env in ENVS:
        raw = yaml.safe_load((charts.chart_dir() / f"values-{env}.yaml").read_text())
        stated = raw["ml-pipeline"]["serving"]["blueGreen"]["autoPromotionEnabled"]
        # Only dev promotes by itself; staging rehearses production's signed manual promotion.
        assert stated is (env == "dev"), f"values-{env}.yaml: autoPromotionEnabled must be stated"
        for profile in [(), (PROFILE,)]:
            objects = charts.render(env, profiles=profile, kube_version=OLD)
            bg = _one(objects, "Rollout", "model-serving")["spec"]["strategy"]["blueGreen"]
            assert bg["autoPromotionEnabled"] is stated  # the profile never overrides the environment
            assert (bg["activeService"], bg["previewService"]) == ("model-serving", "model-serving-preview")
            read = charts.blue_green("model-serving", env, profiles=profile)
            assert read["auto_promotion_enabled"] is stated


def test_a_quoted_false_is_refused_not_taken_as_true(tmp_path: Path) -> None:
    root = _copy_charts(tmp_path)
    prod = root / "charts" / charts.CHART_NAME / "values-prod.yaml"
    prod.write_text(prod.read_text().replace("autoPromotionEnabled: false", 'autoPromotionEnabled: "false"'))
    with pytest.raises(ChartError, match="autoPromotionEnabled must be true or false"):
        charts.blue_green("model-serving", "prod", root)
    with pytest.raises(ChartError, match="must be stated true or false"):
        charts.render("prod", root)


def test_local_images_are_never_pulled(cluster_render: list[dict]) -> None:
    workloads = list(checks.pod_templates(cluster_render))
    assert {o["metadata"]["name"] for o, _, _ in workloads} == {"clinical-gateway", "model-serving",
                                                                "model-training-2-1-0"}
    versions = charts.service_versions("dev", profiles=(PROFILE,))
    for owner, _, spec in workloads:
        for c in spec["containers"]:
            assert c["image"].startswith("registry.local/clinops/"), c["image"]
            assert c["imagePullPolicy"] == "Never"
        if owner["kind"] == "Rollout":
            assert spec["containers"][0]["image"].endswith(":" + versions[owner["metadata"]["name"]])
    values = charts.env_values("dev", overrides={"global": {"imagePullPolicy": "Sometimes"}})
    with pytest.raises(ChartError, match='imagePullPolicy "Sometimes"'):
        charts.render_raw("dev", values=values)


def test_external_level0_is_selectorless_services_with_endpoints(cluster_render: list[dict]) -> None:
    for name, port, service_port in (("postgresql", 17000, 5432), ("redis", 17001, 6379),
                                     ("localstack", 17002, 4566)):
        svc = _one(cluster_render, "Service", name)
        assert "selector" not in svc["spec"], "an external Service must not select pods"
        (sport,) = svc["spec"]["ports"]
        ep = _one(cluster_render, "Endpoints", name)
        (subset,) = ep["subsets"]
        assert subset["addresses"] == [{"ip": "10.88.0.1"}]
        assert subset["ports"] == [{"name": sport["name"], "port": port, "protocol": "TCP"}]
        assert sport["port"] == service_port
    # The pods reach LocalStack through it; its credentials come from the component's Secret.
    pod = _one(cluster_render, "Rollout", "clinical-gateway")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://localstack.clinops-infra.svc:4566"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "clinical-gateway-credentials", "key": "aws-secret-access-key"}
    # Network policies let the clients out to the host address instead of to pods.
    egress = _one(cluster_render, "NetworkPolicy", "gateway-to-postgresql-egress")["spec"]["egress"]
    assert egress == [{"to": [{"ipBlock": {"cidr": "10.88.0.1/32"}}],
                       "ports": [{"protocol": "TCP", "port": 17000}]}]
    assert not [o for o in cluster_render if o["metadata"]["name"] == "gateway-to-postgresql-ingress"]


def test_external_level0_follows_the_local_targets_ports() -> None:
    overrides = charts.external_level0("10.88.0.1", PortMap(base=32000))
    objects = charts.render("dev", profiles=(PROFILE,), overrides=overrides, kube_version=CURRENT)
    slice_ = _one(objects, "EndpointSlice", "redis-external")
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "redis"
    assert (slice_["ports"][0]["port"], slice_["endpoints"][0]["addresses"]) == (32001, ["10.88.0.1"])
    addresses = {t["spec"]["metrics"][0]["provider"]["prometheus"]["address"]
                 for t in objects if t["kind"] == "AnalysisTemplate"}
    assert addresses == {"http://10.88.0.1:32003"}


@pytest.mark.parametrize(("override", "message"), [
    ({"global": {"externalRedis": {"host": "127.0.0.1"}}}, "refuses loopback"),
    ({"global": {"externalRedis": {"host": "redis.example.org"}}}, "must be an IPv4 address"),
    ({"global": {"externalRedis": {"host": ""}}}, "externalRedis.host"),
    ({"infrastructure": {"redis": {"enabled": True}}},
     "externalRedis.enabled and redis.enabled are exclusive"),
])
def test_bad_external_values_are_refused_naming_the_value(override: dict, message: str) -> None:
    values = charts.env_values("dev", profiles=(PROFILE,), overrides=override)
    with pytest.raises(ChartError, match=message):
        charts.render_raw("dev", values=values, kube_version=OLD)


def test_components_without_an_image_are_listed_as_switched_off() -> None:
    off = charts.disabled_components("dev", profiles=(PROFILE,))
    assert off == {
        "infrastructure": ["backup", "minio", "postgresql", "redis"],
        "data-ingestion": ["kafka", "strimzi-kafka-operator"],
        "data-processing": ["spark", "spark-operator"],
        "feature-engineering": ["materializer"],
        "ml-pipeline": ["mlflow"],
        "orchestration": ["airflow"],
        "observability": ["fluent-bit", "kube-prometheus-stack", "opensearch"],
    }
    # The environments alone switch off only MinIO (S3 is AWS's).
    assert charts.disabled_components("prod") == {"infrastructure": ["minio"]}


def test_unknown_profile_is_named() -> None:
    assert PROFILE in charts.available_profiles()
    with pytest.raises(ConfigError, match="'kind-cluster'"):
        charts.render("dev", profiles=("kind-cluster",))


def test_app_project_admits_every_kind_the_profile_renders(cluster_render: list[dict]) -> None:
    project = next(o for o in charts.render_gitops("dev") if o["kind"] == "AppProject")
    allowed = {(w["group"], w["kind"]) for w in project["spec"]["namespaceResourceWhitelist"]
               + project["spec"]["clusterResourceWhitelist"]}
    current = charts.render("dev", profiles=(PROFILE,), kube_version=CURRENT)
    for o in cluster_render + current:
        assert (o["apiVersion"].rpartition("/")[0], o["kind"]) in allowed, o["kind"]


def test_cli_renders_the_profile_for_1_20(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from clinops_lib.config import Settings

    settings = Settings(project_root=ROOT, state_dir=tmp_path / "state", evidence_dir=tmp_path / "ev")
    args = argparse.Namespace(action="render", env="dev", out=str(tmp_path / "out"), profile=[PROFILE],
                              kube_version=OLD)
    assert charts.chart_from_cli(args, settings) == 0
    docs = [d for d in yaml.safe_load_all((tmp_path / "out" / "clinical-mlops-dev.yaml").read_text()) if d]
    assert json.dumps(docs, sort_keys=True) == json.dumps(
        [{**o} for o in charts.render("dev", profiles=(PROFILE,), kube_version=OLD)], sort_keys=True)


# -- with the third-party charts ------------------------------------------------------------------
SHARED_CHARTS = (ROOT / ".." / "shared" / "charts").resolve()


@pytest.mark.parametrize("kube", [OLD, CURRENT])
def test_third_party_charts_render_only_apis_the_version_serves(kube: str, tmp_path: Path) -> None:
    """With the pinned third-party charts in place (../shared/charts, where present: CI's checkout
    has no copy), every built-in object of the prod render uses an API that Kubernetes version
    serves; what cannot exist without its operator is custom resources, listed by group."""
    if not SHARED_CHARTS.is_dir():
        pytest.skip(f"{SHARED_CHARTS} absent: the third-party chart archives are optional")
    root = charts.with_dependency_archives(SHARED_CHARTS, tmp_path / "project")
    present = {d["name"] for d in charts.declared_dependencies(root)} - {
        d["name"] for d in charts.missing_dependencies(root)}
    assert {"postgresql", "redis", "kube-prometheus-stack", "strimzi-kafka-operator"} <= present
    objects = charts.render("prod", root, kube_version=kube)
    sources = {o["metadata"]["annotations"]["clinops.io/source"].split("/templates/")[0] for o in objects}
    assert any("/charts/postgresql" in s for s in sources)
    not_served = [f"{o['apiVersion']} {o['kind']} ({o['metadata']['annotations']['clinops.io/source']})"
                  for o in objects if not checks.is_custom_resource(o)
                  and any("no Kubernetes" in e for e in checks.core_schema_errors(o, kube))]
    assert not_served == []
    groups = {o["apiVersion"].rpartition("/")[0] for o in objects if checks.is_custom_resource(o)}
    assert groups == {"argoproj.io", "external-secrets.io", "kafka.strimzi.io", "monitoring.coreos.com",
                      "networking.istio.io", "security.istio.io", "sparkoperator.k8s.io"}
