"""The Target contract (tests/test_target_contract.py) against the real cluster.

The contract's own test functions, imported unchanged, run here with ``contract`` = the
``kubeconfig`` target on the Debian cluster: the real API server (with the Argo Rollouts CRDs the
controller installed) and, for PromQL, the host's Prometheus that scrapes the cluster's pods
(``CLINOPS_PROMETHEUS_URL``; the cluster has no Prometheus of its own). They live in this tier
(one cluster per run) rather than as a ``TARGETS`` entry of the contract module because the
cluster's session fixture belongs to this folder's conftest.

``changes()`` is every object of the level namespaces with its resourceVersion, plus the Helm
releases: a refused call must leave all of it as it was.

Not run here: ``test_up_adds_the_levels_the_requested_ones_need`` (Helm installs of Levels 0 and 1
with the ``local-cluster`` profile need the local target's Level 0 reachable from pods; the
runbooks' tier covers ``up`` when it runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_target_contract import (
    Contract,
    test_bad_input_is_a_parameter_error_before_any_change,
    test_prometheus_answers_are_read_by_the_one_parser,
    test_status_lists_the_level_catalog_in_order,
)

from clinops_lib import catalog
from clinops_lib.clusters.debian import DebianCluster
from clinops_lib.config import Settings, project_root
from clinops_lib.targets.kube.target import KubeconfigTarget
from clinops_lib.targets.local.components import Prometheus

__all__ = [
    "test_bad_input_is_a_parameter_error_before_any_change",
    "test_prometheus_answers_are_read_by_the_one_parser",
    "test_status_lists_the_level_catalog_in_order",
]

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def contract(debian_cluster: DebianCluster, host_prometheus: Prometheus, kube: Any) -> Iterator[Contract]:
    from kubernetes import client

    settings = Settings(
        target="kubeconfig",
        kubeconfig=debian_cluster.kubeconfig,
        project_root=project_root(),
        prometheus_endpoint=host_prometheus.endpoint(),
    )
    target = KubeconfigTarget(settings)
    namespaces = {target.namespace_of_level(lv.chart) for lv in catalog.LEVELS}
    core, apps, custom = client.CoreV1Api(kube), client.AppsV1Api(kube), client.CustomObjectsApi(kube)

    def changes() -> Any:
        seen = []
        for ns in sorted(namespaces):
            for kind, items in (
                (
                    "Rollout",
                    custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "rollouts")["items"],
                ),
                ("Deployment", apps.list_namespaced_deployment(ns).items),
                ("Service", core.list_namespaced_service(ns).items),
                ("Secret", core.list_namespaced_secret(ns).items),  # Helm's release records
            ):
                for o in items:
                    meta = o["metadata"] if isinstance(o, dict) else o.metadata.to_dict()
                    seen.append(
                        (
                            kind,
                            ns,
                            meta["name"],
                            meta["resource_version" if "resource_version" in meta else "resourceVersion"],
                        )
                    )
        return sorted(seen)

    yield Contract(target, changes)
    target.close()
