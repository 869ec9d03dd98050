"""An abort whose traffic layer cannot be told: HAProxy's admin socket removed mid-release.

The admin socket (a UNIX socket, mode 600) is the only channel that changes weights. When a clumsy
``rm`` or a tmp cleaner removes it, the local target still takes the canary out: it stops the
canary's process, HAProxy's own health check marks it DOWN (``fall 2`` x ``inter 500ms``) and
the retry-on-connection-failure sends in-flight requests to stable; the read-only stats page
confirms it. The next ``up`` restarts HAProxy (with a new socket) on the weights of the state:
the canary stays at 0. Runs on the session's one local platform (conftest.py); the platform is
whole again when the module ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import httpx
import pytest
from conftest import SharedPlatform

from clinops_lib.targets.local.components import HAProxy

pytestmark = pytest.mark.component

SERVICE = "clinical-gateway"


def _versions(url: str, n: int) -> Counter[str]:
    with httpx.Client(timeout=10) as client:
        return Counter(
            f"{r.status_code}:{r.headers.get('X-Clinops-Version', '?')}"
            for r in (client.get(f"{url}/readyz") for _ in range(n))
        )


def test_abort_without_the_admin_socket_stops_the_canary_and_up_restores_the_socket(
    local_platform: Callable[[Iterable[int]], SharedPlatform],
) -> None:
    target = local_platform([0, 1]).target
    haproxy = HAProxy(target.settings)
    stable = target.tracks(SERVICE)["stable"].version
    target.deploy(SERVICE, "9.9.1-noadmin", track="canary")
    try:
        target.set_canary_weight(SERVICE, 50)
        before = _versions(target.service_url(SERVICE), 40)
        assert before["200:9.9.1-noadmin"] > 0, before  # precondition: the canary has traffic

        haproxy.admin_path.unlink()
        target.abort(SERVICE)  # does not raise: the canary was taken out another way

        assert not target.tracks(SERVICE)["canary"].running
        assert _versions(target.service_url(SERVICE), 60) == Counter({f"200:{stable}": 60})
        target.retire(SERVICE, "canary")  # nothing left to stop; does not raise either
        weights = target.state().weight(SERVICE)
        assert (weights.stable, weights.canary) == (100, 0)

        messages: list[str] = []
        target.up([0, 1], progress=messages.append)
        assert "haproxy: admin socket missing: restarting it" in messages
        assert haproxy.admin_path.exists()
        assert target.canary_weight(SERVICE) == 0  # the restarted HAProxy kept the canary out
        assert _versions(target.service_url(SERVICE), 20) == Counter({f"200:{stable}": 20})
    finally:
        if not haproxy.admin_path.exists():
            target.up([0, 1])
        if target.tracks(SERVICE)["canary"].running:
            target.abort(SERVICE)
            target.retire(SERVICE, "canary")
