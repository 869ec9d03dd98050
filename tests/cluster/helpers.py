"""Waits for the cluster tier: every wait has a timeout and says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.5,
    describe: Callable[[], str] | None = None,
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - "not yet", kept for the message
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            extra = f"; {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}{extra}")
        time.sleep(interval)


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def pod_story(core: Any, namespace: str, selector: str) -> str:
    """Phase, conditions and the last events of the selected pods (for failure messages)."""
    rows = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        conds = ",".join(f"{c.type}={c.status}" for c in pod.status.conditions or [])
        waits = [
            f"{s.name}:{s.state.waiting.reason}"
            for s in pod.status.container_statuses or []
            if s.state and s.state.waiting
        ]
        rows.append(f"{pod.metadata.name} {pod.status.phase} {conds} {waits}")
    events = core.list_namespaced_event(namespace).items[-8:]
    rows += [f"event {e.involved_object.name}: {e.reason} {e.message}" for e in events]
    return " | ".join(rows)


def ensure_namespace(core: Any, name: str, *, timeout: float = 60.0) -> None:
    """Create a namespace (one left by an earlier run on a reused cluster is fine) and wait until
    its ``default`` ServiceAccount has its token: Kubernetes 1.20's admission refuses a pod with
    "No API token found for service account" until the token controller has caught up with a
    namespace created a moment ago (a pod created directly is not retried, unlike a controller's)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except ApiException as e:
        if e.status != 409:
            raise

    def token() -> bool:
        account = core.read_namespaced_service_account("default", name)
        return bool(account.secrets)

    wait_until(f"the token of ServiceAccount {name}/default", token, timeout=timeout)
