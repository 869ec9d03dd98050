"""The Rollouts driver against the real Argo Rollouts controller (v1.8.3, built from module source).

No test plays the controller here: the Rollout objects are reconciled by the controller process
the cluster runs, the ReplicaSets by the controller-manager, the pods by kubelet + containerd.
Canary without a traffic router is the controller's basic canary (weights by replica counts).
An AnalysisRun with a ``job`` provider runs a Job from the locally built image whose exit code
decides the metric, so a failing analysis aborts the rollout for real.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from kubernetes import client

from clinops_lib.clusters.debian import DebianCluster
from clinops_lib.exceptions import WaitFailed
from clinops_lib.targets.kube.rollouts import RolloutsDriver

from .helpers import ensure_namespace, wait_until

pytestmark = pytest.mark.cluster

NS = "clinops-rollouts-tier"


@pytest.fixture(scope="module")
def images(debian_cluster: DebianCluster, local_images: dict[str, str]) -> list[str]:
    """Three tags of the locally built gateway image: a stable and two updates."""
    base = local_images["clinical-gateway"]
    repo = base.rsplit(":", 1)[0]
    tags = [f"{repo}:rollout-v1", f"{repo}:rollout-v2", f"{repo}:rollout-v3"]
    for tag in tags:
        subprocess.run(
            [
                "ctr",
                "--address",
                str(debian_cluster.socket),
                "-n",
                "k8s.io",
                "images",
                "tag",
                "--force",
                base,
                tag,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return tags


@pytest.fixture(scope="module")
def driver(kube: Any) -> RolloutsDriver:
    core = client.CoreV1Api(kube)
    ensure_namespace(core, NS)
    return RolloutsDriver(client.CustomObjectsApi(kube), core, NS, poll_interval=0.5)


def _rollout(name: str, image: str, strategy: dict[str, Any], replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "gateway",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
            "strategy": strategy,
        },
    }


def _create(kube: Any, obj: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "rollouts", obj
    )


def _replica_sets(kube: Any, app: str) -> dict[str, int]:
    rs = client.AppsV1Api(kube).list_namespaced_replica_set(NS, label_selector=f"app={app}").items
    return {r.spec.template.spec.containers[0].image: (r.status.ready_replicas or 0) for r in rs}


def test_canary_steps_promote_abort_and_retry_with_the_real_controller(
    kube: Any, driver: RolloutsDriver, images: list[str]
) -> None:
    v1, v2, v3 = images
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    _create(kube, _rollout("canary", v1, {"canary": {"steps": steps}}))
    state = driver.wait_healthy("canary", timeout=180)
    assert state.images == {"gateway": v1}

    driver.set_image("canary", v2)
    paused = driver.wait(
        "canary", "pause at the manual step", lambda s: s.paused and s.current_step_index == 1, timeout=180
    )
    assert paused.pause_conditions and paused.pause_conditions[0]["reason"] == "CanaryPauseStep"
    # basic canary: setWeight 50 of 2 replicas = one pod of each version
    wait_until(
        "one ready pod of v1 and of v2",
        lambda: _replica_sets(kube, "canary") == {v1: 1, v2: 1},
        timeout=120,
        describe=lambda: str(_replica_sets(kube, "canary")),
    )
    sent = driver.promote("canary")
    assert sent == [("status", {"status": {"pauseConditions": None}})]
    done = driver.wait_healthy("canary", timeout=180)
    assert done.images == {"gateway": v2} and done.current_pod_hash == done.stable_rs

    driver.set_image("canary", v3)
    driver.wait(
        "canary", "pause at the manual step", lambda s: s.paused and s.current_step_index == 1, timeout=180
    )
    driver.abort("canary")
    aborted = driver.wait(
        "canary",
        "report the abort",
        lambda s: s.abort and s.phase == "Degraded",
        timeout=120,
        fail=lambda s: None,
    )
    assert "aborted" in aborted.message.lower()
    wait_until(
        "the canary scaled away, v2 serving alone",
        lambda: {k: v for k, v in _replica_sets(kube, "canary").items() if v} == {v2: 2},
        timeout=120,
        describe=lambda: str(_replica_sets(kube, "canary")),
    )
    with pytest.raises(WaitFailed, match="rollout aborted"):
        driver.wait_healthy("canary", timeout=30)

    driver.retry("canary")
    driver.wait("canary", "pause at the manual step again", lambda s: s.paused and not s.abort, timeout=180)
    driver.promote("canary", full=True)
    final = driver.wait_healthy("canary", timeout=180)
    assert final.images == {"gateway": v3}
    assert [verb for verb, _, _ in driver.sent].count("patch status") >= 4


def test_a_failing_analysis_run_aborts_the_rollout(
    kube: Any, driver: RolloutsDriver, images: list[str]
) -> None:
    v1, v2, _ = images
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "always-fails", "namespace": NS},
        "spec": {
            "metrics": [
                {
                    "name": "exit-code",
                    "failureLimit": 0,
                    "provider": {
                        "job": {
                            "spec": {
                                "backoffLimit": 0,
                                "template": {
                                    "spec": {
                                        "restartPolicy": "Never",
                                        "containers": [
                                            {
                                                "name": "check",
                                                "image": v1,
                                                "imagePullPolicy": "Never",
                                                "command": ["python", "-c", "import sys; sys.exit(3)"],
                                            }
                                        ],
                                    }
                                },
                            }
                        }
                    },
                }
            ]
        },
    }
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", NS, "analysistemplates", template
    )
    steps = [
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "always-fails"}]}},
        {"setWeight": 100},
    ]
    _create(kube, _rollout("analysed", v1, {"canary": {"steps": steps}}))
    driver.wait_healthy("analysed", timeout=180)
    driver.set_image("analysed", v2)
    with pytest.raises(WaitFailed, match=r"AnalysisRun \S+ Failed \[exit-code=Failed"):
        driver.wait_healthy("analysed", timeout=240)
    runs = driver.analysis_runs("analysed")
    assert runs and runs[-1].failed and runs[-1].failing_metrics()[0].startswith("exit-code=Failed")
    assert driver.get("analysed").abort
