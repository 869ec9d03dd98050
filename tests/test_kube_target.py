"""KindTarget / KubeconfigTarget against the kmock Kubernetes emulator over real HTTP, plus
the kind prerequisite path for real (this machine has the docker CLI, no daemon, no kind)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kube_emulator import (
    APPLICATIONS,
    APPPROJECTS,
    DEPLOYMENTS,
    EVENTS,
    NODES,
    PODS,
    REPLICASETS,
    ROLLOUTS,
    ArgoController,
    Emulator,
    emulator,
    rollout,
)
from ports import PortBlock

from clinops_lib import catalog, charts
from clinops_lib.clusters.kind import check_prerequisites, stack_components, wait_nodes_ready
from clinops_lib.config import Settings, project_root
from clinops_lib.exceptions import (
    KubernetesAPIError,
    MetricsError,
    ParameterError,
    PrerequisiteError,
    TargetError,
    TrafficError,
    WaitFailed,
    WaitTimeout,
)
from clinops_lib.faults import FaultProfile
from clinops_lib.targets.base import get_target
from clinops_lib.targets.kube.argocd import apply_objects, wait_synced_healthy
from clinops_lib.targets.kube.client import load_clients
from clinops_lib.targets.kube.rollouts import MERGE_PATCH
from clinops_lib.targets.kube.target import KubeconfigTarget

pytestmark = pytest.mark.component

__all__ = ["emulator"]

ROOT = project_root()
GW_NS = "clinops-ingestion"
GW = "clinical-gateway"
OLD, NEW = "aaa111", "bbb222"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def writes(emu: Emulator) -> list[tuple[str, Any]]:
    return [
        (str(r.url.path), r.data) for r in emu.requests() if str(r.method.value).upper() in ("PATCH", "POST")
    ]


def replicaset(pod_hash: str, image: str, ready: int = 2) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": GW, "rollouts-pod-template-hash": pod_hash}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": f"{GW}-{pod_hash}", "namespace": GW_NS, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": GW, "image": image}]},
            },
        },
        "status": {"replicas": 2, "readyReplicas": ready},
    }


@pytest.fixture()
def gateway(emulator: Emulator) -> tuple[KubeconfigTarget, ArgoController, Emulator]:
    """The gateway Rollout as the chart defines it (steps from charts.canary_steps), stable on 1.0.0."""
    steps = charts.canary_steps(GW, "dev")
    emulator.put(
        ROLLOUTS, GW_NS, GW, rollout(GW, GW_NS, image="ghcr.io/clinops/clinical-gateway:1.0.0", steps=steps)
    )
    emulator.put(REPLICASETS, GW_NS, f"{GW}-{OLD}", replicaset(OLD, "ghcr.io/clinops/clinical-gateway:1.0.0"))
    emulator.put(REPLICASETS, GW_NS, f"{GW}-{NEW}", replicaset(NEW, "ghcr.io/clinops/clinical-gateway:1.1.0"))
    ctl = ArgoController(emulator, GW_NS, GW, new_hash=NEW)
    clock = Clock()

    def sleep(seconds: float) -> None:
        clock.now += seconds
        ctl.tick()

    target = KubeconfigTarget(
        Settings(target="kubeconfig", kubeconfig=emulator.kubeconfig, project_root=ROOT),
        sleep=sleep,
        clock=clock,
        poll_interval=1.0,
    )
    return target, ctl, emulator


# -- prerequisites: fail before any call --------------------------------------------------------
def test_missing_kubeconfig_fails_in_get_target_before_any_call(tmp_path: Path, emulator: Emulator) -> None:
    missing = tmp_path / "nope" / "kubeconfig"
    with pytest.raises(PrerequisiteError, match=rf"kubeconfig {missing} does not exist.*--target local"):
        get_target(Settings(target="kubeconfig", kubeconfig=missing))
    assert emulator.requests() == []


def test_missing_context_fails_before_any_call(emulator: Emulator) -> None:
    with pytest.raises(
        PrerequisiteError, match=r"context 'prod-eu' is not in kubeconfig .*contexts: emulator"
    ):
        get_target(Settings(target="kubeconfig", kubeconfig=emulator.kubeconfig, kube_context="prod-eu"))
    assert emulator.requests() == []


def _kind_possible() -> bool:
    if not shutil.which("docker") or not shutil.which("kind"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(_kind_possible(), reason="this machine can run kind; the error path is not reachable")
def test_kind_target_without_cluster_names_the_missing_prerequisite(emulator: Emulator) -> None:
    with pytest.raises(PrerequisiteError) as err:
        get_target(Settings(target="kind", kubeconfig=emulator.kubeconfig))
    text = str(err.value)
    assert "kind cluster 'clinops' does not exist (no context 'kind-clinops'" in text
    assert "Docker daemon does not answer" in text or "`docker` CLI is not installed" in text
    assert "`kind` binary is not installed" in text or shutil.which("kind")
    assert "--target local" in text
    assert emulator.requests() == []


@pytest.mark.skipif(_kind_possible(), reason="this machine can run kind; the error path is not reachable")
def test_clinops_kind_create_fails_fast_with_a_prerequisite_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clinops_lib.cli", "kind", "create"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "PrerequisiteError: cannot run a kind cluster" in out.stderr
    assert "docker" in out.stderr.lower() and "--target local" in out.stderr


def test_check_prerequisites_names_each_missing_piece() -> None:
    def run(cmd: Any, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "Cannot connect to the Docker daemon at unix:///x")

    with pytest.raises(PrerequisiteError, match=r"`docker` CLI is not installed; the `kind` binary"):
        check_prerequisites(which=lambda name: None, run=run)
    with pytest.raises(PrerequisiteError, match=r"Docker daemon does not answer .*Cannot connect") as err:
        check_prerequisites(which=lambda name: f"/usr/bin/{name}", run=run)
    assert "`kind` binary" not in str(err.value)
    ok = subprocess.CompletedProcess([], 0, "27.0.1", "")
    check_prerequisites(which=lambda name: f"/usr/bin/{name}", run=lambda c, t: ok)  # nothing missing


# -- the canary path through the Target interface -------------------------------------------------
def test_deploy_patches_image_and_fault_and_waits_for_the_canary(gateway: Any) -> None:
    target, ctl, emu = gateway
    state = target.deploy(GW, "1.1.0", fault=FaultProfile.parse("errors:5%"))
    assert (state.track, state.version, state.running) == ("canary", "1.1.0", True)
    ((path, body),) = writes(emu)
    assert path == f"/apis/argoproj.io/v1alpha1/namespaces/{GW_NS}/rollouts/{GW}"
    assert {
        "op": "replace",
        "path": "/spec/template/spec/containers/0/image",
        "value": "ghcr.io/clinops/clinical-gateway:1.1.0",
    } in body
    env = {
        e["name"]: e["value"]
        for e in emu.obj(ROLLOUTS, GW_NS, GW)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (
        env["CLINOPS_FAULT"] == str(FaultProfile.parse("errors:5%"))
        and env["CLINOPS_SERVICE_VERSION"] == "1.1.0"
    )
    tracks = target.tracks(GW)
    assert tracks["stable"].version == "1.0.0" and tracks["canary"].version == "1.1.0"


def test_set_canary_weight_promotes_step_by_step_and_abort_is_the_status_patch(gateway: Any) -> None:
    target, ctl, emu = gateway
    target.deploy(GW, "1.1.0")
    target.set_canary_weight(GW, 10)
    assert target.canary_weight(GW) == 10
    target.set_canary_weight(GW, 50)
    assert target.canary_weight(GW) == 50
    status_path = f"/apis/argoproj.io/v1alpha1/namespaces/{GW_NS}/rollouts/{GW}/status"
    assert [b for p, b in writes(emu) if p == status_path] == [{"status": {"pauseConditions": None}}]
    with pytest.raises(TrafficError, match="only moves forward"):
        target.set_canary_weight(GW, 10)
    # the judge decides to abort: one merge patch on the status subresource, then weight 0
    target.abort(GW)
    abort_req = [r for r in emu.requests() if str(r.url.path) == status_path][-1]
    assert abort_req.data == {"status": {"abort": True}}
    assert abort_req.headers.get("Content-Type") == MERGE_PATCH
    assert target.canary_weight(GW) == 0
    # retire the canary: the stable image goes back into the template, the rollout is Healthy
    target.retire(GW)
    image = emu.obj(ROLLOUTS, GW_NS, GW)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/clinops/clinical-gateway:1.0.0"


def test_promote_is_promote_full_and_waits_healthy(gateway: Any) -> None:
    target, ctl, emu = gateway
    target.deploy(GW, "1.1.0")
    target.set_canary_weight(GW, 10)
    stable = target.promote(GW)
    assert stable.track == "stable" and stable.version == "1.1.0"
    assert {"status": {"promoteFull": True}} in [b for _, b in writes(emu)]
    assert target.canary_weight(GW) == 0


def test_set_canary_weight_rejects_bad_values_before_any_patch(gateway: Any) -> None:
    """Bad input is a ParameterError (exit 2) on this target as on the local one (it was a
    TrafficError here): the contract's base class checks it; see test_target_contract.py."""
    target, _, emu = gateway
    with pytest.raises(ParameterError, match="must be an integer percent 0..100"):
        target.set_canary_weight(GW, 150)
    with pytest.raises(ParameterError, match="unknown service 'billing'"):
        target.set_canary_weight("billing", 10)
    assert writes(emu) == []


def test_api_error_through_the_target_names_the_object(gateway: Any) -> None:
    target, _, emu = gateway
    emu.rule("get", ROLLOUTS, kmock.name(GW)) << kmock.KubernetesError(
        status=403, reason="Forbidden", message="rollouts is forbidden"
    )
    with pytest.raises(KubernetesAPIError, match=rf"get Rollout {GW_NS}/{GW} failed \(HTTP 403\): Forbidden"):
        target.canary_weight(GW)


# -- metrics through the API server's service proxy ---------------------------------------------
PROM = (
    "/api/v1/namespaces/clinops-observability/services/kube-prometheus-stack-prometheus:9090"
    "/proxy/api/v1/query"
)


def test_prometheus_query_goes_through_the_service_proxy(gateway: Any) -> None:
    target, _, emu = gateway
    emu.rule("get", PROM) << {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.973"]}]},
    }
    q = 'sum(rate(http_requests_total{service="clinical-gateway"}[1m]))'
    assert target.prometheus_query(q) == pytest.approx(0.973)
    req = [r for r in emu.requests() if str(r.url.path) == PROM][-1]
    assert req.params.get("query") == q and req.headers.get("Authorization") == "Bearer not-a-secret"


def test_prometheus_no_data_is_none_and_errors_are_metrics_errors(gateway: Any) -> None:
    target, _, emu = gateway
    emu.rule("get", PROM, kmock.params(query="empty")) << {
        "status": "success",
        "data": {"resultType": "vector", "result": []},
    }
    assert target.prometheus_query("empty") is None
    emu.rule("get", PROM, kmock.params(query="down")) << kmock.KubernetesError(
        status=503, reason="ServiceUnavailable", message="no endpoints available for service"
    )
    with pytest.raises(MetricsError, match=r"HTTP 503.*no endpoints available"):
        target.prometheus_query("down")


# -- readiness of a level, nodes, Argo CD ---------------------------------------------------------------
def test_level_readiness_failure_names_objects_with_conditions_and_events(gateway: Any) -> None:
    target, _, emu = gateway
    ns = "clinops-ml"
    emu.put(
        DEPLOYMENTS,
        ns,
        "mlflow",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "mlflow", "namespace": ns},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "mlflow"}},
                "template": {
                    "metadata": {"labels": {"app": "mlflow"}},
                    "spec": {"containers": [{"name": "mlflow", "image": "mlflow:2.17"}]},
                },
            },
            "status": {
                "replicas": 2,
                "readyReplicas": 0,
                "conditions": [
                    {
                        "type": "Available",
                        "status": "False",
                        "reason": "MinimumReplicasUnavailable",
                        "message": "Deployment does not have minimum availability.",
                    }
                ],
            },
        },
    )
    emu.put(
        EVENTS,
        ns,
        "mlflow.1",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "mlflow.1", "namespace": ns},
            "involvedObject": {"kind": "Deployment", "name": "mlflow", "namespace": ns},
            "type": "Warning",
            "reason": "FailedCreate",
            "message": "quota exceeded",
        },
    )
    with pytest.raises(
        WaitTimeout,
        match=r"Deployment clinops-ml/mlflow ready 0/2 \[Available=False "
        r"MinimumReplicasUnavailable.*events: Warning FailedCreate: quota exceeded",
    ):
        target.wait_workloads_ready(ns, timeout=3)
    emu.put(
        PODS,
        ns,
        "mlflow-x",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "mlflow-x", "namespace": ns},
            "spec": {"containers": [{"name": "mlflow", "image": "mlflow:2.17"}]},
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "mlflow",
                        "image": "mlflow:2.17",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}},
                    }
                ],
            },
        },
    )
    with pytest.raises(
        WaitFailed,
        match=r"Pod clinops-ml/mlflow-x container mlflow ImagePullBackOff: "
        r"pull access denied",
    ):
        target.wait_workloads_ready(ns, timeout=300)


def node(name: str, ready: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "KubeletNotReady" if ready != "True" else "KubeletReady",
                }
            ]
        },
    }


def test_nodes_ready_wait_names_the_node_that_is_not(emulator: Emulator) -> None:
    for name, ready in (
        ("clinops-control-plane", "True"),
        ("clinops-worker", "True"),
        ("clinops-worker2", "False"),
    ):
        emulator.put(NODES, None, name, node(name, ready))
    clients = load_clients(Settings(kubeconfig=emulator.kubeconfig))
    clock = Clock()

    def sleep(s: float) -> None:
        clock.now += s

    with pytest.raises(WaitTimeout, match=r"not ready: \['clinops-worker2 \(KubeletNotReady\)'\]"):
        wait_nodes_ready(clients, timeout=10, sleep=sleep, clock=clock)
    emulator.patch(NODES, None, "clinops-worker2", node("clinops-worker2", "True"))
    assert len(wait_nodes_ready(clients, timeout=10, sleep=sleep, clock=clock)) == 3


def app(name: str, sync: str, health: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {"project": "clinops"},
        "status": {"sync": {"status": sync}, "health": {"status": health}, **status},
    }


def test_argocd_wait_names_applications_not_synced_and_healthy(emulator: Emulator) -> None:
    clients = load_clients(Settings(kubeconfig=emulator.kubeconfig))
    applied = apply_objects(
        clients,
        [
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AppProject",
                "metadata": {"name": "clinops", "namespace": "argocd"},
                "spec": {},
            },
            app("clinops-infrastructure", "Synced", "Healthy"),
            app("clinops-ml-pipeline", "OutOfSync", "Progressing"),
        ],
    )
    assert applied == [
        "AppProject argocd/clinops",
        "Application argocd/clinops-infrastructure",
        "Application argocd/clinops-ml-pipeline",
    ]
    again = apply_objects(clients, [app("clinops-ml-pipeline", "OutOfSync", "Progressing")])  # 409 -> patch
    assert again == ["Application argocd/clinops-ml-pipeline"]
    assert emulator.obj(APPPROJECTS, "argocd", "clinops")["kind"] == "AppProject"
    clock = Clock()

    def sleep(s: float) -> None:
        clock.now += s

    with pytest.raises(
        WaitTimeout,
        match=r"clinops-ml-pipeline: sync=OutOfSync health=Progressing.*"
        r"Application clinops-observability does not exist",
    ):
        wait_synced_healthy(clients, expected=["clinops-observability"], timeout=20, sleep=sleep, clock=clock)
    emulator.patch(
        APPLICATIONS,
        "argocd",
        "clinops-ml-pipeline",
        {
            "status": {
                "health": {"status": "Degraded"},
                "resources": [
                    {
                        "kind": "Rollout",
                        "namespace": "clinops-ml",
                        "name": "model-serving",
                        "health": {"status": "Degraded", "message": "RolloutAborted"},
                    }
                ],
            }
        },
    )
    with pytest.raises(
        WaitFailed, match=r"resource Rollout clinops-ml/model-serving Degraded: RolloutAborted"
    ):
        wait_synced_healthy(clients, timeout=20, sleep=sleep, clock=clock)
    emulator.patch(
        APPLICATIONS,
        "argocd",
        "clinops-ml-pipeline",
        {"status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}, "resources": None}},
    )
    assert [a.name for a in wait_synced_healthy(clients, timeout=20, sleep=sleep, clock=clock)] == [
        "clinops-infrastructure",
        "clinops-ml-pipeline",
    ]


# -- static files of the kind path -------------------------------------------------------------------------
def test_kind_config_has_ingress_node_port_mappings_and_two_workers() -> None:
    cfg = yaml.safe_load((ROOT / "kind" / "kind-config.yaml").read_text())
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    cp = cfg["nodes"][0]
    assert 'node-labels: "ingress-ready=true"' in cp["kubeadmConfigPatches"][0]
    assert sorted(m["hostPort"] for m in cp["extraPortMappings"]) == [80, 443]


def test_stack_versions_are_pinned_and_cover_the_stack() -> None:
    comps = stack_components(Settings(project_root=ROOT))
    names = {c.name for c in comps}
    assert {"istiod", "argo-rollouts", "argo-cd", "external-secrets", "kube-prometheus-stack"} <= names
    for c in comps:
        assert c.version[0].isdigit() and all(x.isdigit() for x in c.version.split(".")), c
        assert c.repo.startswith("https://"), c


@pytest.mark.skipif(_kind_possible(), reason="this machine can run kind; the error path is not reachable")
def test_provision_runbook_on_kind_without_docker_seals_a_failed_bundle(
    tmp_path: Path, port_block: PortBlock
) -> None:
    import json

    env = {
        **os.environ,
        "CLINOPS_PORT_BASE": str(port_block.base),
        "CLINOPS_STATE_DIR": str(tmp_path / "state"),
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        "CLINOPS_EVIDENCE_DIR": str(tmp_path / "evidence"),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clinops_lib.cli",
            "run",
            str(ROOT / "runbooks" / "00-provision.ipynb"),
            "--target",
            "kind",
            "--out",
            str(tmp_path / "evidence"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    verdicts = list((tmp_path / "evidence").glob("00-provision/*/verdict.json"))
    assert len(verdicts) == 1, out.stdout + out.stderr
    verdict = json.loads(verdicts[0].read_text())
    assert verdict["verdict"] == "FAILED"
    assert verdict["failed_cell"]["ename"] == "PrerequisiteError"
    assert "kind cluster 'clinops' does not exist" in verdict["failed_cell"]["evalue"]
    assert "--target local" in verdict["failed_cell"]["evalue"]


class RecordingHelm:
    """Stands in for ``helm_python.Config`` (which needs a real cluster): records each call,
    knows which releases exist, can fail one release."""

    def __init__(self, existing: set[str], fail: str | None = None) -> None:
        self.calls: list[tuple[str, str, str | None, dict[str, Any]]] = []
        self.existing = existing
        self.fail = fail

    def status(self, name: str) -> dict[str, Any]:
        import helm_python as helm

        if name not in self.existing:
            raise helm.HelmNotFoundError(f"release: not found: {name}")
        return {"name": name}

    def _act(self, verb: str, chart: str, name: str, values: dict[str, Any], namespace: str | None) -> None:
        import helm_python as helm

        self.calls.append((verb, name, namespace, values))
        if name == self.fail:
            raise helm.HelmReleaseError(f"{verb} {name}: context deadline exceeded")
        assert Path(chart).is_dir(), chart
        self.existing.add(name)

    def install(
        self,
        chart: str,
        name: str,
        values: dict[str, Any],
        *,
        namespace: str | None = None,
        create_namespace: bool = False,
        timeout: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        assert create_namespace and labels
        self._act("install", chart, name, values, namespace)

    def upgrade(
        self,
        chart: str,
        name: str,
        values: dict[str, Any],
        *,
        namespace: str | None = None,
        timeout: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        assert labels
        self._act("upgrade", chart, name, values, namespace)


def test_up_installs_one_release_per_level_in_level_order(emulator: Emulator) -> None:
    helm = RecordingHelm(existing={"clinops-data-ingestion"})
    target = KubeconfigTarget(
        Settings(target="kubeconfig", kubeconfig=emulator.kubeconfig, project_root=ROOT), helm_config=helm
    )
    progress: list[str] = []
    rows = target.up([4, 1, 0], progress=progress.append)
    assert [(v, n, ns) for v, n, ns, _ in helm.calls] == [
        ("install", "clinops-infrastructure", "clinops-infra"),
        ("upgrade", "clinops-data-ingestion", "clinops-ingestion"),
        ("install", "clinops-ml-pipeline", "clinops-ml"),
    ]
    assert helm.calls[2][3] == charts.subchart_values("ml-pipeline", "dev", ROOT)
    assert [p for p in progress if p.endswith("s")][0].startswith("level 0 infrastructure: ready in")
    # the rows of the levels asked for and the ones they need, from the level catalog: the emulator
    # runs no workloads here, so the services are "stopped" and the API server answered
    assert [(r.level, r.component) for r in rows] == [
        (lv.number, c.name) for lv in catalog.LEVELS if lv.number in (0, 1, 4) for c in lv.components]
    for r, c in zip(rows, [c for lv in catalog.LEVELS if lv.number in (0, 1, 4) for c in lv.components],
                    strict=True):
        on_kube = "healthy" if c.name == "kubernetes" else "stopped"
        expected = on_kube if c.runs_on("kube") else "not on this target"
        assert r.health == expected, r


def test_up_reports_the_failing_release_and_rejects_unknown_levels(emulator: Emulator) -> None:
    helm = RecordingHelm(existing=set(), fail="clinops-data-ingestion")
    target = KubeconfigTarget(
        Settings(target="kubeconfig", kubeconfig=emulator.kubeconfig, project_root=ROOT), helm_config=helm
    )
    with pytest.raises(ParameterError, match=r"level 9 does not exist"):
        target.up([0, 9])
    assert helm.calls == []
    with pytest.raises(
        TargetError,
        match=r"helm release clinops-data-ingestion \(level 1\) into clinops-ingestion "
        r"failed: install clinops-data-ingestion: context deadline exceeded",
    ):
        target.up([0, 1, 2])
    assert [n for _, n, _, _ in helm.calls] == ["clinops-infrastructure", "clinops-data-ingestion"]


@pytest.mark.cluster
@pytest.mark.skipif(os.environ.get("CLINOPS_KIND_TESTS") != "1",
                    reason="needs a kind cluster (a Docker engine): CLINOPS_KIND_TESTS=1 where one runs")
def test_kind_cluster_has_three_ready_nodes_and_the_rollouts_api() -> None:
    target = get_target(Settings.from_env(target="kind"))
    assert len(wait_nodes_ready(target.clients, timeout=300)) == 3  # type: ignore[attr-defined]
    target.clients.custom.list_cluster_custom_object(  # type: ignore[attr-defined]
        "argoproj.io", "v1alpha1", "rollouts"
    )


def test_a_slow_kubelet_secret_cache_is_waited_for_but_a_missing_secret_is_broken() -> None:
    from clinops_lib.targets.kube.target import waiting_is_broken

    slow = "failed to sync secret cache: timed out waiting for the condition"
    assert not waiting_is_broken("CreateContainerConfigError", slow)
    assert waiting_is_broken("CreateContainerConfigError", 'secret "model-training-credentials" not found')
    assert waiting_is_broken("CrashLoopBackOff", "back-off 10s restarting failed container")
    assert not waiting_is_broken("ContainerCreating", None)


def test_kube_proxy_destinations_are_read_per_service_from_an_iptables_dump() -> None:
    """The end of a switch without a traffic router is read from kube-proxy's own rules: only the
    DNAT targets of this Service's KUBE-SEP chains count (a Service whose name extends it does
    not), with or without a port name and quotes, as v1.20.2 writes them."""
    from clinops_lib.targets.kube.hostside import sep_destinations

    dump = "\n".join([
        ":KUBE-SEP-AAA - [0:0]",
        '-A KUBE-SEP-AAA -s 10.88.0.12/32 -m comment --comment "clinops-ml/model-serving:http" '
        "-j KUBE-MARK-MASQ",
        '-A KUBE-SEP-AAA -p tcp -m comment --comment "clinops-ml/model-serving:http" -m tcp -j DNAT '
        "--to-destination 10.88.0.12:8080",
        "-A KUBE-SEP-BBB -p tcp -m comment --comment clinops-ml/model-serving -m tcp -j DNAT "
        "--to-destination 10.88.0.13:8080",
        '-A KUBE-SEP-CCC -p tcp -m comment --comment "clinops-ml/model-serving-preview:http" -m tcp -j DNAT '
        "--to-destination 10.88.0.14:8080",
        '-A KUBE-SEP-DDD -p tcp -m comment --comment "other/model-serving:http" -m tcp -j DNAT '
        "--to-destination 10.88.0.15:8080",
        '-A KUBE-SVC-XYZ -m comment --comment "clinops-ml/model-serving:http" -j KUBE-SEP-AAA',
    ])
    assert sep_destinations(dump, "clinops-ml", "model-serving") == {"10.88.0.12", "10.88.0.13"}
    assert sep_destinations(dump, "clinops-ml", "model-serving-preview") == {"10.88.0.14"}
    assert sep_destinations(dump, "clinops-ml", "absent") == set()
