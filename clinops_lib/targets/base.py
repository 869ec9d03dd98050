"""The one interface runbooks and drills use, whatever they run on.

A runbook asks for ``get_target(settings)`` and never learns whether the platform is a set
of supervised local processes behind HAProxy (``local``), a kind cluster (``kind``) or any
cluster reached through a kubeconfig (``kubeconfig``). Each implementation is one class
behind the registry (:func:`~clinops_lib.catalog.register_target`), like papermill's engines.

The contract, enforced here once for every target
-------------------------------------------------
The public methods below are concrete: they validate their inputs and then call a subclass
hook (``_deploy``, ``_set_canary_weight``, ...), as papermill's ``Engine.execute_notebook``
does its shared work around ``execute_managed_notebook``. So every target:

* rejects bad input the same way, before anything changes: an unknown service, a version
  outside the version rule, a track other than stable/canary, a weight that is not an integer
  percent 0..100, an unknown level or opt-in component — all
  :class:`~clinops_lib.exceptions.ParameterError` (exit 2, naming the parameter). Why this
  behaviour won over the Kubernetes target's former ``TrafficError`` (exit 1): these are the
  caller's mistakes, detectable without the platform, and the project's rule is "bad input ->
  exit 2 naming the thing, before any change". ``TrafficError`` stays for what the *platform*
  cannot do now (no canary running, Argo's canary steps only move forward, an Argo blue-green
  Rollout switches 0 or 100 % — HAProxy on the local target can split any service);
* adds the levels the requested ones need in :meth:`up` (Level 1 needs Level 0);
* builds :meth:`status` from the level catalog: every component of every level in catalog order,
  ``not on this target`` where the target does not run it, then any workload the target found
  that the catalog does not list;
* reads Prometheus answers with one parser (:func:`instant_value`): more than one series is a
  :class:`~clinops_lib.exceptions.MetricsError` everywhere (a silently chosen first series could
  judge the wrong version), no series or NaN is ``None`` (no data).

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
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .. import catalog
from ..catalog import register_target, target_names
from ..config import Settings
from ..exceptions import ConfigError, MetricsError, ParameterError
from ..faults import FaultProfile

__all__ = [
    "TRACKS",
    "ComponentStatus",
    "Health",
    "Progress",
    "Target",
    "Track",
    "TrackState",
    "get_target",
    "instant_value",
    "register_target",
    "target_names",
]

Track = Literal["stable", "canary"]
TRACKS: tuple[Track, Track] = ("stable", "canary")
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


def _noop(_: str) -> None:
    return None


def instant_value(promql: str, data: Mapping[str, Any]) -> float | None:
    """One number from the ``data`` of a Prometheus instant-query answer (the one parser).

    A scalar or a one-series vector gives its value; an empty vector or NaN (e.g. 0/0) gives
    ``None`` (no data); more than one series, a matrix or a malformed answer is a
    :class:`MetricsError` that says how to fix the query.
    """
    try:
        kind = data["resultType"]
        if kind == "scalar":
            values = [data["result"][1]]
        elif kind == "vector":
            values = [s["value"][1] for s in data["result"]]
        else:
            raise MetricsError(f"query {promql!r} returned a {kind}, not one number")
        if not values:
            return None
        if len(values) > 1:
            raise MetricsError(
                f"query {promql!r} returned {len(values)} series; aggregate it (sum, max, ...) to one number")
        value = float(values[0])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise MetricsError(f"query {promql!r}: malformed Prometheus answer {dict(data)!r:.200}") from e
    return None if math.isnan(value) else value


class Target(ABC):
    """What every target implements: the hooks below; the public methods validate and delegate.

    ``platform`` names the catalog column that describes this target's components
    (``local`` or ``kube``); a registered third target picks the one it resembles or its own.
    """

    name: str = ""
    platform: str = "kube"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> dict[str, str]:
        """What this run ran on, for the evidence bundle (a runbook records it as the table
        ``target``): the target, and for a cluster which one, its Kubernetes version and the
        traffic mode."""
        return {"target": self.name, "traffic_mode": self.traffic_mode}

    def analysis_decisions(self, service: str) -> list[dict[str, Any]]:
        """What an in-platform analysis decided about ``service``'s releases (Argo Rollouts'
        AnalysisRuns on a cluster), one row per run and metric; empty where the drill engine
        is the only judge (the local target)."""
        self.check_service(service)
        return []

    @property
    def traffic_mode(self) -> str:
        """How user traffic is split between stable and canary on this target."""
        return ""

    @property
    def requests_per_connection(self) -> int | None:
        """Requests a client should send per connection (None: keep-alive). A target whose traffic
        layer balances per connection (kube-proxy before a basic canary) asks for 1, so the
        canary's share of requests is its share of pods (the load generator honours it)."""
        return None

    @property
    def chart_profiles(self) -> tuple[str, ...]:
        """The chart values profiles this target's platform is deployed with (e.g. ``local-cluster``
        on the cluster built from Debian packages): a drill judges by the steps those values give."""
        return ()

    # -- validation shared by every target -------------------------------------------------------
    @staticmethod
    def check_service(service: object) -> catalog.Service:
        return catalog.service(service)

    @staticmethod
    def check_track(track: object) -> Track:
        if track not in TRACKS:
            raise ParameterError("track", f"unknown track {track!r}; known: stable, canary")
        return cast(Track, track)

    @staticmethod
    def check_weight(weight: object) -> int:
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise ParameterError("weight", f"canary weight {weight!r} must be an integer percent 0..100")
        return weight

    # -- lifecycle -------------------------------------------------------------------------------
    def up(self, levels: str | Iterable[int] | None = None, *, progress: Progress | None = None,
           opt_in: Iterable[str] | None = None, **options: Any) -> list[ComponentStatus]:
        """Bring the given levels (default: all) and the levels they need up and healthy; idempotent.

        ``opt_in`` names the opt-in components to start (:func:`~clinops_lib.catalog.opt_in_components`:
        by default all of them when every level is wanted, none for a partial ``up``); the hook
        gets the resolved list as ``opt_in``. Returns the status rows of those levels (an opt-in
        component left out and not running has none); a healthy row says ``already up`` when the
        target had nothing to start.
        """
        wanted = catalog.resolve_levels(catalog.parse_levels(levels))
        chosen = catalog.opt_in_components(wanted, opt_in)
        wanted = catalog.resolve_levels(sorted({*wanted, *(catalog.component(n).level for n in chosen)}))
        changed = self._up(wanted, progress or _noop, opt_in=chosen, **options)
        left_out = {c.name for c in catalog.components() if c.opt_in and c.name not in chosen}
        rows = [s for s in self.status() if s.level in wanted
                and not (s.component in left_out and s.health == "stopped")]
        if not changed:
            for s in rows:
                if s.health == "healthy":
                    s.detail = "already up"
        return rows

    @abstractmethod
    def _up(self, levels: list[int], progress: Progress, **options: Any) -> bool:
        """Start what is missing of ``levels`` (complete, sorted); True when anything changed."""

    @abstractmethod
    def down(self, *, purge: bool = False) -> None:
        """Stop everything this target started; ``purge`` also removes its state."""

    def status(self) -> list[ComponentStatus]:
        """Every component of every level in catalog order, then workloads the catalog lacks."""
        observed = dict(self._observe())
        rows: list[ComponentStatus] = []
        for lv in catalog.LEVELS:
            for comp in lv.components:
                what = comp.what_on(self.platform)
                if not comp.runs_on(self.platform):
                    rows.append(ComponentStatus(lv.number, comp.name, "not on this target", detail=what))
                    continue
                missing = ComponentStatus(lv.number, comp.name, "stopped", detail=f"{what}: not found")
                rows.append(observed.pop(comp.name, missing))
        rows.extend(observed.values())
        return rows

    @abstractmethod
    def _observe(self) -> Mapping[str, ComponentStatus]:
        """What runs now: catalog component name (or the workload's own name) -> its row."""

    # -- services and traffic --------------------------------------------------------------------
    def service_url(self, service: str) -> str:
        """Base URL where user traffic for ``service`` enters (through the traffic layer)."""
        return self._service_url(self.check_service(service).name)

    def preview_url(self, service: str) -> str:
        """Base URL of the canary/green track alone, with no user traffic."""
        return self._preview_url(self.check_service(service).name)

    def deploy(self, service: str, version: str, *, track: Track = "canary",
               fault: FaultProfile | None = None, timeout: float = 60.0) -> TrackState:
        """Run ``version`` of ``service`` on ``track`` (side by side with the other track),
        wait until it is ready, with weight 0 if it is the canary."""
        svc = self.check_service(service)
        catalog.check_version(version)
        return self._deploy(svc.name, version, self.check_track(track), fault or FaultProfile(), timeout)

    def retire(self, service: str, track: Track = "canary") -> None:
        """Stop the given track after its traffic has been taken away."""
        self._retire(self.check_service(service).name, self.check_track(track))

    def set_canary_weight(self, service: str, weight: int) -> None:
        """Send ``weight`` percent (0..100) of user traffic to the canary track."""
        svc = self.check_service(service)
        self._set_canary_weight(svc.name, self.check_weight(weight))

    def canary_weight(self, service: str) -> int:
        """The canary weight actually in force (read back from the traffic layer)."""
        return self._canary_weight(self.check_service(service).name)

    def promote(self, service: str) -> TrackState:
        """Make the canary the new stable (100 % traffic) and free the canary track."""
        return self._promote(self.check_service(service).name)

    def abort(self, service: str) -> None:
        """All traffic back to stable at once; the canary keeps running until retired."""
        self._abort(self.check_service(service).name)

    def tracks(self, service: str) -> dict[Track, TrackState]:
        """What runs on each track of ``service`` now."""
        return self._tracks(self.check_service(service).name)

    # The hooks get a service name the base class has checked against the catalog.
    @abstractmethod
    def _service_url(self, service: str) -> str: ...

    @abstractmethod
    def _preview_url(self, service: str) -> str: ...

    @abstractmethod
    def _deploy(self, service: str, version: str, track: Track, fault: FaultProfile,
                timeout: float) -> TrackState: ...

    @abstractmethod
    def _retire(self, service: str, track: Track) -> None: ...

    @abstractmethod
    def _set_canary_weight(self, service: str, weight: int) -> None: ...

    @abstractmethod
    def _canary_weight(self, service: str) -> int: ...

    @abstractmethod
    def _promote(self, service: str) -> TrackState: ...

    @abstractmethod
    def _abort(self, service: str) -> None: ...

    @abstractmethod
    def _tracks(self, service: str) -> dict[Track, TrackState]: ...

    # -- metrics ---------------------------------------------------------------------------------
    def prometheus_query(self, promql: str) -> float | None:
        """Evaluate an instant PromQL query to one number (``None`` when it has no data)."""
        if not isinstance(promql, str) or not promql.strip():
            raise MetricsError("empty PromQL query")
        return instant_value(promql, self._prometheus_query(promql))

    @abstractmethod
    def _prometheus_query(self, promql: str) -> Mapping[str, Any]:
        """The ``data`` object of Prometheus' answer to an instant query (errors: MetricsError)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release client resources (not the platform: that is ``down``)."""


def get_target(settings: Settings | None = None, name: str | None = None) -> Target:
    """The target named by ``name`` or ``settings.target``, from the registry."""
    settings = settings or Settings.from_env()
    name = name or settings.target
    impl = catalog.target_implementation(name)
    if settings.target != name:
        settings = settings.with_(target=name)
    if isinstance(impl, str):
        module_name, _, cls_name = impl.partition(":")
        impl = getattr(importlib.import_module(module_name), cls_name)
    if not (isinstance(impl, type) and issubclass(impl, Target)):
        raise ConfigError(f"target {name!r} is registered as {impl!r}, not a Target subclass")
    return impl(settings)


