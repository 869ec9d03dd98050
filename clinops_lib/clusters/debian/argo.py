"""Installing what the Argo Rollouts controller needs on the cluster: its CRDs and RBAC.

Both are read from the module source the controller binary was built from
(``manifests/crds/*.yaml``, ``manifests/role/argo-rollouts-clusterrole.yaml``), so they always
match the binary. The controller runs as a host process with a client certificate whose user
is its ServiceAccount's (``system:serviceaccount:argo-rollouts:argo-rollouts``): the built-in
RBAC authorizer then restricts it by the upstream ClusterRole exactly as it would in a pod.

Kubernetes 1.20 accepts the v1.8.3 CRDs (checked when they are applied: a rejected CRD raises
with the API server's reason, naming the file); v1.9's Rollout CRD is the first one 1.20
rejects (a ``default: ""`` it treats as null).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from ...exceptions import KubernetesAPIError, PrerequisiteError, WaitTimeout
from .api import ClusterApi

__all__ = ["crd_files", "install_rollouts"]


def crd_files(source: Path) -> list[Path]:
    folder = source / "manifests" / "crds"
    files = sorted(p for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    if not files:
        raise PrerequisiteError(f"no Argo Rollouts CRDs in {folder} (run `clinops cluster build`)")
    return files


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]


def install_rollouts(
    api: ClusterApi, source: Path, *, namespace: str = "argo-rollouts", timeout: float = 60.0
) -> list[str]:
    """Apply the CRDs, wait until they are Established, then the namespace and RBAC.

    Returns the names of the CRDs installed.
    """
    names = []
    for path in crd_files(source):
        for crd in _load(path):
            try:
                api.apply(crd)
            except KubernetesAPIError as e:
                raise KubernetesAPIError(e.verb, f"{e.obj} from {path}", e.status, e.reason) from e
            names.append(crd["metadata"]["name"])
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        still = []
        for name in pending:
            obj = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
            conds = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions") or []}
            if conds.get("Established") != "True":
                still.append(name)
        pending = still
        if pending and time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for CRDs to be Established: {pending}")
        if pending:
            time.sleep(0.2)
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "argo-rollouts", "namespace": namespace},
        }
    )
    role_file = source / "manifests" / "role" / "argo-rollouts-clusterrole.yaml"
    roles = _load(role_file)
    if not roles:
        raise PrerequisiteError(f"no ClusterRole in {role_file}")
    for role in roles:
        api.apply(role)
    api.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "argo-rollouts"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "argo-rollouts",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "argo-rollouts", "namespace": namespace}],
        }
    )
    return names
