"""Prometheus with ``kubernetes_sd_configs`` for the Debian cluster (issue 13, point 5).

Debian's prometheus 2.42 is built without Kubernetes discovery, so the host's Prometheus for the
cluster path is built from the Prometheus Go module (``build.build_prometheus``, cached under
``/var/cache/clinops/prometheus/<version>/``; ``clinops cluster build`` builds it).

The first two tests need no cluster, only that build (they belong to this tier because the
tier's setup builds it): the built ``promtool`` accepts the pod job that Debian's rejects and
refuses a broken one; the built ``prometheus`` serves its HTTP API without the web UI's assets.
The third runs against the cluster: the host Prometheus, with the cluster's ``clinops-prometheus``
client certificate, discovers an annotated pod, scrapes it, leaves an unannotated one alone, and
that identity may read pods and nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import enterable_tmpdir
from kubernetes import client
from ports import PortAllocator

from clinops_lib.clusters.debian import BuildCache, DebianCluster
from clinops_lib.clusters.debian.api import ClusterApi
from clinops_lib.clusters.debian.build import PROMETHEUS_VERSION, build_prometheus
from clinops_lib.clusters.debian.metrics import (
    POD_JOB,
    ApiAccess,
    check_config,
    pod_scrape_job,
)
from clinops_lib.clusters.debian.pki import make_pki
from clinops_lib.config import Settings
from clinops_lib.exceptions import ConfigError, KubernetesAPIError
from clinops_lib.targets.local import supervisor
from clinops_lib.targets.local.components import Prometheus

from .helpers import ensure_namespace, pod_ready, pod_story, wait_until

pytestmark = pytest.mark.cluster

NS = "clinops-prometheus-sd"


@pytest.fixture(scope="session")
def built_prometheus() -> BuildCache:
    """Prometheus and promtool from the module source (built once; seconds when cached)."""
    if os.environ.get("CLINOPS_CLUSTER_TESTS") != "1":
        pytest.skip("CLINOPS_CLUSTER_TESTS is not 1: the cluster tier runs from scripts/test.sh "
                    "(its setup builds Prometheus)")
    cache = BuildCache(Settings.from_env().cache_dir)
    build_prometheus(cache)
    return cache


def _config_with(tmp: Path, cache: BuildCache, jobs: list[dict[str, Any]]) -> Path:
    prom = Prometheus(Settings(state_dir=tmp / "state"), binary=cache.prometheus, extra_scrape_configs=jobs)
    prom.prepare()
    return prom.dir / "prometheus.yml"


def test_the_built_promtool_accepts_the_pod_job_that_debians_rejects(
    built_prometheus: BuildCache, tmp_path: Path
) -> None:
    pki = make_pki(
        tmp_path / "pki",
        node_name="node",
        node_ip="192.0.2.2",
        service_ip="10.0.0.1",
        extra_clients={"prometheus": (None, "clinops-prometheus")},
    )
    job = pod_scrape_job(ApiAccess.from_pki(pki, "https://127.0.0.1:16442"), namespaces=("a", "b"))
    config = _config_with(tmp_path, built_prometheus, [job])
    assert "kubernetes_sd_configs" in config.read_text()
    report = check_config(built_prometheus.promtool, config)
    assert "SUCCESS" in report

    broken = yaml.safe_load(config.read_text())
    broken["scrape_configs"][-1]["kubernetes_sd_configs"][0]["role"] = "pods"  # not a role
    config.write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError, match="promtool rejects"):
        check_config(built_prometheus.promtool, config)

    debian = shutil.which("promtool")
    if debian and Path(debian).resolve() != built_prometheus.promtool.resolve():
        broken["scrape_configs"][-1]["kubernetes_sd_configs"][0]["role"] = "pod"
        config.write_text(yaml.safe_dump(broken))
        out = subprocess.run(
            [debian, "check", "config", str(config)], capture_output=True, text=True, timeout=60
        )
        # the reason this build exists: Debian's parser does not know the field
        assert out.returncode != 0 and "kubernetes_sd_configs" in out.stdout + out.stderr


def _started(prom: Prometheus) -> supervisor.RunningProcess:
    prom.prepare()
    proc = supervisor.start(prom.spec())
    try:
        supervisor.wait_healthy(proc, prom.healthy, 90, "prometheus /-/ready")
    except BaseException:
        supervisor.stop(proc, timeout=15.0)
        raise
    return proc


@pytest.fixture
def prometheus_root() -> Iterator[Path]:
    root = enterable_tmpdir("clinops-prom-sd-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_built_prometheus_serves_its_api_without_the_ui_assets(
    built_prometheus: BuildCache, port_allocator: PortAllocator, prometheus_root: Path
) -> None:
    block = port_allocator.block()
    try:
        prom = Prometheus(
            Settings(state_dir=prometheus_root / "state", ports=block.portmap()),
            binary=built_prometheus.prometheus,
        )
        proc = _started(prom)
        try:
            info = httpx.get(f"{prom.endpoint()}/api/v1/status/buildinfo", timeout=5).json()
            assert info["data"]["version"] == PROMETHEUS_VERSION.removeprefix("v")
            up = wait_until(
                "Prometheus to scrape itself",
                lambda: [
                    r
                    for r in httpx.get(
                        f"{prom.endpoint()}/api/v1/query", params={"query": 'up{job="prometheus"}'}, timeout=5
                    ).json()["data"]["result"]
                    if r["value"][1] == "1"
                ],
                timeout=60,
            )
            assert up
            assert prom.rules_available() == bool(prom.rule_groups())  # the platform's rules load
        finally:
            supervisor.stop(proc, timeout=15.0)
    finally:
        port_allocator.release(block)


def _pod(name: str, image: str, annotations: dict[str, str] | None) -> Any:
    container = client.V1Container(
        name="gateway",
        image=image,
        image_pull_policy="Never",
        ports=[client.V1ContainerPort(container_port=8080, name="http")],
        env=[client.V1EnvVar(name="CLINOPS_SERVICE_VERSION", value="sd")],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/healthz", port=8080), period_seconds=1
        ),
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "prom-sd"}, annotations=annotations),
        spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=2),
    )


def test_the_host_prometheus_discovers_and_scrapes_the_annotated_pods(
    debian_cluster: DebianCluster,
    kube: Any,
    local_images: dict[str, str],
    built_prometheus: BuildCache,
    port_allocator: PortAllocator,
    prometheus_root: Path,
) -> None:
    access = ApiAccess.from_pki(debian_cluster.pki, debian_cluster.server)
    assert access.missing() == [], (
        "the cluster has no Prometheus client certificate (created by an older `create`): "
        "`clinops cluster delete` and create it again"
    )
    core = client.CoreV1Api(kube)
    ensure_namespace(core, NS)
    image = local_images["clinical-gateway"]
    notes = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    suffix = f"{os.getpid()}-{int(time.time()) % 100000}"  # a pod an interrupted run left cannot clash
    scraped_pod, unscraped_pod = f"scraped-{suffix}", f"not-scraped-{suffix}"
    for name, pod_notes in ((scraped_pod, notes), (unscraped_pod, None)):
        core.create_namespaced_pod(NS, _pod(name, image, pod_notes))
    try:
        for name in (scraped_pod, unscraped_pod):
            wait_until(
                f"pod {name} Ready",
                lambda n=name: pod_ready(core.read_namespaced_pod(n, NS)),
                timeout=180,
                describe=lambda: pod_story(core, NS, "app=prom-sd"),
            )
        # the identity may read pods and nothing else (the real RBAC authorizer says so)
        with ClusterApi(access.server, access.ca_file, access.cert_file, access.key_file) as api:
            assert api.get(f"/api/v1/namespaces/{NS}/pods")
            with pytest.raises(KubernetesAPIError) as denied:
                api.get(f"/api/v1/namespaces/{NS}/secrets")
            assert denied.value.status == 403

        block = port_allocator.block()
        try:
            prom = Prometheus(
                Settings(state_dir=prometheus_root / "state", ports=block.portmap()),
                binary=built_prometheus.prometheus,
                extra_scrape_configs=[pod_scrape_job(access, namespaces=(NS,), scrape_interval="1s")],
            )
            prom.prepare()
            check_config(built_prometheus.promtool, prom.dir / "prometheus.yml")
            proc = _started(prom)
            try:

                def scraped() -> list[dict[str, Any]]:
                    data = httpx.get(f"{prom.endpoint()}/api/v1/targets", timeout=5).json()["data"]
                    return [
                        t
                        for t in data["activeTargets"]
                        if t["labels"].get("job") == POD_JOB and t["health"] == "up"
                    ]

                targets = wait_until(
                    "the annotated pod scraped through kubernetes_sd",
                    lambda: [t for t in scraped() if t["labels"].get("pod") == scraped_pod],
                    timeout=120,
                )
                assert targets[0]["labels"]["namespace"] == NS
                assert targets[0]["scrapeUrl"].endswith(":8080/metrics")
                assert unscraped_pod not in {t["labels"].get("pod") for t in scraped()}
                samples = httpx.get(
                    f"{prom.endpoint()}/api/v1/query",
                    params={"query": f'scrape_samples_scraped{{job="{POD_JOB}",pod="{scraped_pod}"}}'},
                    timeout=5,
                ).json()["data"]["result"]
                assert samples and float(samples[0]["value"][1]) > 0
                dropped = httpx.get(
                    f"{prom.endpoint()}/api/v1/targets", params={"state": "dropped"}, timeout=5
                ).json()["data"]["droppedTargets"]
                assert any(
                    t["discoveredLabels"].get("__meta_kubernetes_pod_name") == unscraped_pod for t in dropped
                ), "the unannotated pod was not even discovered"
            finally:
                supervisor.stop(proc, timeout=15.0)
        finally:
            port_allocator.release(block)
    finally:
        for name in (scraped_pod, unscraped_pod):
            core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
