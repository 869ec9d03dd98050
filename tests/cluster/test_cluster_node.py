"""The cluster itself: a Ready v1.20.2 node, pods from locally built images, Services via kube-proxy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kubernetes import client

from clinops_lib.clusters.debian import DebianCluster

from .helpers import ensure_namespace, pod_ready, pod_story, wait_until

pytestmark = pytest.mark.cluster

NS = "clinops-cluster-tier"


def test_node_is_ready_and_runs_the_version_built_from_debian_source(
    debian_cluster: DebianCluster, kube: Any
) -> None:
    nodes = client.CoreV1Api(kube).list_node().items
    assert [n.metadata.name for n in nodes] == [debian_cluster.config.node_name]
    node = nodes[0]
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True", node.status.conditions
    assert node.status.node_info.kubelet_version == "v1.20.2"
    assert node.status.node_info.container_runtime_version.startswith("containerd://1.6")
    assert client.VersionApi(kube).get_code().git_version == "v1.20.2"
    states = {s.name: s for s in debian_cluster.status()}
    assert all(s.healthy for s in states.values()), [s for s in states.values() if not s.healthy]


def test_a_pod_from_a_locally_built_image_becomes_ready_behind_a_service(
    debian_cluster: DebianCluster, kube: Any, local_images: dict[str, str]
) -> None:
    core = client.CoreV1Api(kube)
    ensure_namespace(core, NS)
    image = local_images["clinical-gateway"]
    labels = {"app": "gateway-smoke"}
    container = client.V1Container(
        name="gateway",
        image=image,
        image_pull_policy="Never",
        ports=[client.V1ContainerPort(container_port=8080)],
        env=[client.V1EnvVar(name="CLINOPS_SERVICE_VERSION", value="smoke")],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/healthz", port=8080), period_seconds=1
        ),
    )
    core.create_namespaced_pod(
        NS,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="gateway-smoke", labels=labels),
            spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=2),
        ),
    )
    core.create_namespaced_service(
        NS,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="gateway-smoke"),
            spec=client.V1ServiceSpec(
                selector=labels, ports=[client.V1ServicePort(port=80, target_port=8080)]
            ),
        ),
    )
    pod = wait_until(
        "the gateway pod Ready",
        lambda: (p := core.read_namespaced_pod("gateway-smoke", NS)) and pod_ready(p) and p,
        timeout=180,
        describe=lambda: pod_story(core, NS, "app=gateway-smoke"),
    )
    # the image runs as the Dockerfile's numeric non-root user
    assert pod.status.container_statuses[0].image.endswith(image.split("/")[-1])
    direct = httpx.get(f"http://{pod.status.pod_ip}:8080/healthz", timeout=5)
    assert direct.status_code == 200
    svc = core.read_namespaced_service("gateway-smoke", NS)
    via_proxy = wait_until(
        "the ClusterIP to answer through kube-proxy",
        lambda: httpx.get(f"http://{svc.spec.cluster_ip}/healthz", timeout=3).status_code == 200,
        timeout=60,
    )
    assert via_proxy
    logs = core.read_namespaced_pod_log("gateway-smoke", NS)
    assert "clinical-gateway" in logs
