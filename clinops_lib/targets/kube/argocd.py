"""The GitOps path: apply the AppProject and the app-of-apps, then wait for Argo CD.

Why this exists next to the Helm path: in staging/prod nobody runs ``helm upgrade``; a
commit to ``charts/clinical-mlops/values-<env>.yaml`` is synced by Argo CD. A runbook proves
such a deployment by waiting until every Application reports
``status.sync.status == Synced`` and ``status.health.status == Healthy``, and names each one
that does not (with its conditions and the resources that are not healthy).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ...exceptions import KubernetesAPIError, WaitFailed, WaitTimeout
from .client import KubeClients, api_call

__all__ = ["ARGOCD_NAMESPACE", "AppState", "apply_objects", "application_states", "wait_synced_healthy"]

ARGOCD_NAMESPACE = "argocd"
GROUP, VERSION = "argoproj.io", "v1alpha1"
_PLURALS = {"Application": "applications", "AppProject": "appprojects", "ApplicationSet": "applicationsets"}


@dataclass(frozen=True)
class AppState:
    """One Argo CD Application's sync and health, with what explains a bad state."""

    name: str
    sync: str
    health: str
    message: str
    conditions: list[str]
    unhealthy_resources: list[str]

    @property
    def ok(self) -> bool:
        return self.sync == "Synced" and self.health == "Healthy"

    @property
    def failed(self) -> bool:
        """Degraded health or a failed sync operation: it will not heal by waiting."""
        return self.health == "Degraded" or self.message.startswith("OperationFailed")

    def describe(self) -> str:
        parts = [f"Application {self.name}: sync={self.sync} health={self.health}"]
        if self.message:
            parts.append(self.message)
        parts += self.conditions + [f"resource {r}" for r in self.unhealthy_resources]
        return "; ".join(parts)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> AppState:
        status = obj.get("status") or {}
        op = status.get("operationState") or {}
        message = ""
        if op.get("phase") in ("Failed", "Error"):
            message = f"OperationFailed: {op.get('message', '')}".strip()
        resources = [
            f"{r.get('kind')} {r.get('namespace', '')}/{r.get('name')} "
            f"{(r.get('health') or {}).get('status')}: {(r.get('health') or {}).get('message', '')}".strip()
            for r in status.get("resources") or []
            if (r.get("health") or {}).get("status") not in (None, "Healthy")
        ]
        return cls(
            name=str((obj.get("metadata") or {}).get("name", "")),
            sync=str((status.get("sync") or {}).get("status") or "Unknown"),
            health=str((status.get("health") or {}).get("status") or "Unknown"),
            message=message,
            conditions=[f"{c.get('type')}: {c.get('message', '')}" for c in status.get("conditions") or []],
            unhealthy_resources=resources,
        )


def apply_objects(clients: KubeClients, objects: Iterable[dict[str, Any]],
                  namespace: str = ARGOCD_NAMESPACE) -> list[str]:
    """Create each AppProject/Application, or merge-patch it when it exists (HTTP 409)."""
    applied = []
    for obj in objects:
        kind = obj.get("kind", "")
        plural = _PLURALS.get(kind)
        if plural is None:
            continue
        name = obj["metadata"]["name"]
        ns = obj["metadata"].get("namespace") or namespace
        try:
            with api_call("create", kind, ns, name):
                clients.custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, obj,
                                                               _request_timeout=clients.request_timeout)
        except KubernetesAPIError as e:
            if e.status != 409:
                raise
            with api_call("patch", kind, ns, name):
                clients.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, plural, name, {k: v for k, v in obj.items() if k != "status"},
                    _content_type="application/merge-patch+json", _request_timeout=clients.request_timeout)
        applied.append(f"{kind} {ns}/{name}")
    return applied


def application_states(clients: KubeClients, namespace: str = ARGOCD_NAMESPACE) -> list[AppState]:
    with api_call("list", "Application", namespace, None):
        listing = clients.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "applications",
                                                               _request_timeout=clients.request_timeout)
    return sorted((AppState.from_object(o) for o in listing.get("items") or []), key=lambda a: a.name)


def wait_synced_healthy(clients: KubeClients, *, expected: Iterable[str] = (),
                        namespace: str = ARGOCD_NAMESPACE,
                        timeout: float = 900.0, poll_interval: float = 5.0,
                        sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> list[AppState]:
    """Wait until every Application (and each ``expected`` name exists) is Synced and Healthy."""
    wanted = set(expected)
    deadline = clock() + timeout
    while True:
        apps = application_states(clients, namespace)
        missing = sorted(wanted - {a.name for a in apps})
        bad = [a for a in apps if not a.ok]
        if apps and not bad and not missing:
            return apps
        failed = [a for a in bad if a.failed]
        if failed:
            raise WaitFailed("Argo CD applications failed: " + " | ".join(a.describe() for a in failed))
        if clock() >= deadline:
            what = [a.describe() for a in bad] + [f"Application {m} does not exist" for m in missing]
            not_yet = " | ".join(what) or "no Applications at all"
            raise WaitTimeout(f"waited {timeout:g}s for every Argo CD Application in {namespace} to be "
                              f"Synced and Healthy; not yet: {not_yet}")
        sleep(poll_interval)
