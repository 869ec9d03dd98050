"""The one interface runbooks and drills use, whatever they run on.

A runbook asks for ``get_target(settings)`` and never learns whether the platform is a set
of supervised local processes behind HAProxy (``local``), a kind cluster (``kind``) or any
cluster reached through a kubeconfig (``kubeconfig``). Each implementation is one class
behind the registry below, like papermill's engines.

Vocabulary
----------
A *service* (``clinical-gateway``, ``model-serving``) has two *tracks*:

* ``stable`` — the version that serves users (blue, in blue-green terms);
* ``canary`` — the new version (green / preview in blue-green terms).

``set_canary_weight(service, w)`` sends ``w`` % of user traffic to the canary track
(locally: HAProxy ``set weight``; on Kubernetes: the Rollout's step weight that Istio's
VirtualService carries). ``preview_url`` reaches the canary track directly with no user
traffic, which is what blue-green pre-promotion analysis needs. ``promote`` makes the
canary the new stable; ``abort`` puts all traffic back on stable at once.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..config import Settings
from ..exceptions import ConfigError
from ..faults import FaultProfile

__all__ = [
    "ComponentStatus",
    "Health",
    "Progress",
    "Target",
    "Track",
    "TrackState",
    "get_target",
    "register_target",
]

Track = Literal["stable", "canary"]
Health = Literal["healthy", "unhealthy", "stopped", "not on this target"]
Progress = Callable[[str], None]


@dataclass
class ComponentStatus:
    """One row of ``clinops status`` and of the runbooks' component tables."""

    level: int
    component: str
    health: Health
    version: str = ""
    endpoint: str = ""
    seconds_to_ready: float | None = None
    started_at: float | None = None  # epoch seconds, for the deployment timeline
    ready_at: float | None = None
    detail: str = ""
    log_file: str = ""


@dataclass
class TrackState:
    """What runs on one track of one service."""

    service: str
    track: Track
    version: str
    running: bool
    endpoint: str = ""
    fault: str = "none"
    extra: dict[str, str] = field(default_factory=dict)


class Target(ABC):
    """What every target implements. Methods raise subclasses of ``TargetError``."""

    name: str = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- lifecycle -----------------------------------------------------------------
    @abstractmethod
    def up(self, levels: Sequence[int] | None = None, *,
           progress: Progress | None = None) -> list[ComponentStatus]:
        """Bring the given levels (default: all) up and healthy; idempotent."""

    @abstractmethod
    def down(self, *, purge: bool = False) -> None:
        """Stop everything this target started; ``purge`` also removes its state."""

    @abstractmethod
    def status(self) -> list[ComponentStatus]:
        """Every component of every level, including those not on this target."""

    # -- services and traffic --------------------------------------------------------
    @abstractmethod
    def service_url(self, service: str) -> str:
        """Base URL where user traffic for ``service`` enters (through the traffic layer)."""

    @abstractmethod
    def preview_url(self, service: str) -> str:
        """Base URL of the canary/green track alone, with no user traffic."""

    @abstractmethod
    def deploy(self, service: str, version: str, *, track: Track = "canary",
               fault: FaultProfile | None = None, timeout: float = 60.0) -> TrackState:
        """Run ``version`` of ``service`` on ``track`` (side by side with the other track),
        wait until it is ready, with weight 0 if it is the canary."""

    @abstractmethod
    def retire(self, service: str, track: Track = "canary") -> None:
        """Stop the given track after its traffic has been taken away."""

    @abstractmethod
    def set_canary_weight(self, service: str, weight: int) -> None:
        """Send ``weight`` percent (0..100) of user traffic to the canary track."""

    @abstractmethod
    def canary_weight(self, service: str) -> int:
        """The canary weight actually in force (read back from the traffic layer)."""

    @abstractmethod
    def promote(self, service: str) -> TrackState:
        """Make the canary the new stable (100 % traffic) and free the canary track."""

    @abstractmethod
    def abort(self, service: str) -> None:
        """All traffic back to stable at once; the canary keeps running until retired."""

    @abstractmethod
    def tracks(self, service: str) -> dict[Track, TrackState]:
        """What runs on each track of ``service`` now."""

    # -- metrics -----------------------------------------------------------------------
    @abstractmethod
    def prometheus_query(self, promql: str) -> float | None:
        """Evaluate an instant PromQL query to one number (``None`` when it has no data)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release client resources (not the platform: that is ``down``)."""


_REGISTRY: dict[str, str] = {
    "local": "clinops_lib.targets.local.target:LocalTarget",
    "kind": "clinops_lib.targets.kube.target:KindTarget",
    "kubeconfig": "clinops_lib.targets.kube.target:KubeconfigTarget",
}


def register_target(name: str, dotted: str) -> None:
    """Register another implementation as ``module:Class`` (loaded lazily)."""
    _REGISTRY[name] = dotted


def get_target(settings: Settings | None = None, name: str | None = None) -> Target:
    """The target named by ``name`` or ``settings.target``."""
    settings = settings or Settings.from_env()
    name = name or settings.target
    if name not in _REGISTRY:
        raise ConfigError(f"unknown target {name!r}; known targets: {', '.join(sorted(_REGISTRY))}")
    if settings.target != name:
        settings = settings.with_(target=name)
    module_name, _, cls_name = _REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    target: Target = cls(settings)
    return target
