"""A small, explicit HTTP client for the few API calls the cluster's own lifecycle needs.

Creating the cluster must not depend on the code it is there to test (the Kubernetes target,
the official client's configuration loading), and its waits need short, bounded requests
with the component named in every error. So: ``httpx`` with a TLS context built from the
cluster's CA and a client certificate, server-side apply for the objects the cluster installs
(CRDs, RBAC, namespaces), and plain GETs for readiness. Third-party errors become
:class:`KubernetesAPIError` here and nowhere else in this package.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from ...exceptions import KubernetesAPIError

__all__ = ["ClusterApi", "resource_path"]

FIELD_MANAGER = "clinops-debian-cluster"

#: kind -> (API prefix, plural, namespaced) for the objects the cluster installs itself.
_RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "Deployment": ("/apis/apps/v1", "deployments", True),
}


def resource_path(obj: Mapping[str, Any]) -> str:
    """The object's URL path (for the kinds in ``_RESOURCES``)."""
    kind = str(obj.get("kind"))
    if kind not in _RESOURCES:
        raise ValueError(f"kind {kind!r} is not one the cluster installs itself")
    prefix, plural, namespaced = _RESOURCES[kind]
    meta = obj.get("metadata") or {}
    ns = f"/namespaces/{meta.get('namespace') or 'default'}" if namespaced else ""
    return f"{prefix}{ns}/{plural}/{meta['name']}"


class ClusterApi:
    """Talks to one API server as one identity (a client certificate)."""

    def __init__(self, server: str, ca: Path, cert: Path, key: Path, *, timeout: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        self.server = server
        self._client = httpx.Client(base_url=server, verify=context, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ClusterApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise KubernetesAPIError(method, what, None, f"{type(e).__name__}: {e}") from e

    def get(
        self, path: str, *, what: str | None = None, allow_missing: bool = False
    ) -> dict[str, Any] | None:
        resp = self._request("GET", path, what or path)
        if resp.status_code == 404 and allow_missing:
            return None
        if resp.status_code != 200:
            raise KubernetesAPIError("get", what or path, resp.status_code, _reason(resp))
        data: dict[str, Any] = resp.json()
        return data

    def text(self, path: str) -> str:
        """GET a plain-text endpoint (``/readyz``); raises on anything but 200."""
        resp = self._request("GET", path, path)
        if resp.status_code != 200:
            raise KubernetesAPIError("get", path, resp.status_code, resp.text.strip()[-300:])
        return resp.text

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (beta and on by default in 1.20) with a fixed field manager."""
        path = resource_path(obj)
        resp = self._request(
            "PATCH",
            path,
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if resp.status_code not in (200, 201):
            raise KubernetesAPIError("apply", f"{obj.get('kind')} {path}", resp.status_code, _reason(resp))
        data: dict[str, Any] = resp.json()
        return data

    def delete_collection(self, path: str, *, grace_seconds: int = 1) -> None:
        resp = self._request("DELETE", path, path, params={"gracePeriodSeconds": str(grace_seconds)})
        if resp.status_code not in (200, 202, 404):
            raise KubernetesAPIError("delete", path, resp.status_code, _reason(resp))


def _reason(resp: httpx.Response) -> str:
    try:
        data = resp.json()
        return f"{data.get('reason', '')}: {str(data.get('message', ''))[:400]}"
    except ValueError:
        return resp.text.strip()[:400]
