"""What a cluster without its own data services and images gets from the host it runs on.

The single-node cluster built from Debian packages (:mod:`clinops_lib.clusters.debian`) has no
registry, so no PostgreSQL, Redis, LocalStack or Prometheus images, and no cluster DNS. It says
so itself: ``create`` writes a ConfigMap (``kube-public/clinops-cluster``, read here as
:class:`ClusterFacts`) naming its chart values profile (``local-cluster``), the address pods
reach the host at (the pod bridge's gateway), its containerd socket and its traffic mode. On
such a cluster the ``kubeconfig`` target

* runs Level 0 (PostgreSQL, Redis, LocalStack) and the metrics (Prometheus) **as the local
  target runs them** (the same code, its state dir and ports: :class:`HostServices`), and relays
  each onto the bridge gateway with ``socat`` bound to that address only, because Kubernetes
  refuses loopback Endpoints and the local services keep listening on loopback alone; the
  charts' selector-less Services and Endpoints (``global.external*``) point at the relays;
* imports the project's images into the cluster's containerd under the references the profile
  pins (built once with buildah and cached by their inputs: :mod:`clinops_lib.clusters.debian.images`),
  and tags a drill's new version from the stable image (the version is the
  ``CLINOPS_SERVICE_VERSION`` the pod template carries; the code is the same);
* writes the ``<component>-credentials`` Secrets the charts read when there is no External
  Secrets operator (keys in charts/README.md), from the local target's connection settings;
* runs that Prometheus as the binary built from the Prometheus Go module with the cluster's pod
  job (:func:`clinops_lib.clusters.debian.metrics.pod_scrape_job`): it discovers and scrapes the
  pods through ``kubernetes_sd_configs`` against the API server named in the facts, with the
  cluster's read-pods-only ``clinops-prometheus`` identity. That is its only view of the pods.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...clusters.debian.metrics import POD_JOB, ApiAccess, access_from_facts, pod_scrape_job
from ...config import PortMap, Settings
from ...exceptions import ComponentError, PrerequisiteError
from ..base import ComponentStatus, Progress
from ..local import supervisor as sup

__all__ = ["FACTS_NAME", "FACTS_NAMESPACE", "ClusterFacts", "HostServices", "credentials",
           "kube_proxy_destinations", "kube_proxy_synced_after", "sep_destinations"]

FACTS_NAMESPACE, FACTS_NAME = "kube-public", "clinops-cluster"

#: host component -> its port in the local target's PortMap (each relayed onto the bridge gateway)
RELAYED: dict[str, Callable[[PortMap], int]] = {
    "postgresql": lambda p: p.postgres,
    "redis": lambda p: p.redis,
    "localstack": lambda p: p.localstack,
    "prometheus": lambda p: p.prometheus,
}
#: level -> the host components that stand in for that level's in-cluster ones
HOST_LEVELS: dict[int, tuple[str, ...]] = {0: ("postgresql", "redis", "localstack"), 6: ("prometheus",)}


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster says it is (the ConfigMap ``kube-public/clinops-cluster``)."""

    provider: str
    kubernetes_version: str
    node: str
    chart_profile: str
    host_address: str
    containerd_socket: str
    rollouts_controller: str
    traffic_mode: str
    kube_proxy_metrics: str = ""
    #: how the host's Prometheus discovers the pods (None: a cluster created by older code)
    prometheus_access: ApiAccess | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, str]) -> ClusterFacts:
        return cls(
            provider=str(data.get("provider", "")),
            kubernetes_version=str(data.get("kubernetesVersion", "")),
            node=str(data.get("node", "")),
            chart_profile=str(data.get("chartProfile", "")),
            host_address=str(data.get("hostAddress", "")),
            containerd_socket=str(data.get("containerdSocket", "")),
            rollouts_controller=str(data.get("rolloutsController", "")),
            traffic_mode=str(data.get("trafficMode", "")),
            kube_proxy_metrics=str(data.get("kubeProxyMetrics", "")),
            prometheus_access=access_from_facts(data),
        )

    def summary(self) -> dict[str, str]:
        return {"provider": self.provider, "kubernetes_version": self.kubernetes_version, "node": self.node,
                "chart_profile": self.chart_profile, "host_address": self.host_address,
                "rollouts_controller": self.rollouts_controller, "traffic_mode": self.traffic_mode}


def kube_proxy_synced_after(metrics_url: str, moment: float) -> bool:
    """kube-proxy has applied every endpoint change it knows of, in a sync that began after
    ``moment`` (epoch seconds): its ``kubeproxy_sync_proxy_rules_last_timestamp_seconds`` and
    ``..._endpoint_changes_pending`` metrics. False when the metrics cannot be read."""
    import httpx

    try:
        text = httpx.get(metrics_url, timeout=2.0).text
    except httpx.HTTPError:
        return False
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                    "kubeproxy_sync_proxy_rules_endpoint_changes_pending"):
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return (values.get("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 0.0
            and values.get("kubeproxy_sync_proxy_rules_last_timestamp_seconds", 0.0) > moment)


def kube_proxy_destinations(namespace: str, service: str) -> set[str] | None:
    """The pod IPs new connections to Service ``namespace/service`` can be sent to now: the DNAT
    targets of kube-proxy's ``KUBE-SEP`` rules for that Service (iptables mode, comment
    ``"<ns>/<service>:<port>"``), read with ``iptables-save -t nat`` on this host, where the
    cluster's node runs. None when the rules cannot be read (not root, no iptables).

    This is the ground truth of "no new connection reaches a pod" after a selector switch or an
    abort. kube-proxy's metrics cannot say it: a rules sync updates
    ``kubeproxy_sync_proxy_rules_last_timestamp_seconds`` only when something changed (measured on
    v1.20.2: no update for minutes when idle), so "synced after I saw the endpoints change" never
    comes when kube-proxy was quicker than the observer."""
    try:
        out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return sep_destinations(out.stdout, namespace, service)


def sep_destinations(rules: str, namespace: str, service: str) -> set[str]:
    """The DNAT targets of the ``KUBE-SEP`` rules for Service ``namespace/service`` in an
    ``iptables-save -t nat`` dump (comment ``"<ns>/<service>:<port name>"``, or without the port
    name, quoted or not); rules of other Services, even with a longer name, are not counted."""
    comment = re.compile(r'--comment "?' + re.escape(f"{namespace}/{service}") + r'(:[^" ]*)?"? ')
    found: set[str] = set()
    for line in rules.splitlines():
        if line.startswith("-A KUBE-SEP-") and comment.search(line):
            dnat = re.search(r"--to-destination (\d+\.\d+\.\d+\.\d+):\d+", line)
            if dnat:
                found.add(dnat.group(1))
    return found


def credentials(settings: Settings, *, pg_address: str, redis_address: str) -> dict[str, dict[str, str]]:
    """``{component: Secret data}`` for the charts' ``<component>-credentials`` Secrets.

    LocalStack's fixed dummy keys are not secrets; PostgreSQL is the local target's (its
    ``trust`` for local connections: the relay connects from loopback) and has no password.
    """
    from ..local.components import DB_NAME, DB_USER, Services

    aws = {"aws-access-key-id": "test", "aws-secret-access-key": "test"}  # LocalStack's dummy keys
    redis_url = f"redis://{redis_address}/0"
    return {
        "clinical-gateway": {**aws, "pg-dsn": f"postgresql://{DB_USER}@{pg_address}/{DB_NAME}",
                             "redis-url": redis_url,
                             "events-topic-arn": Services.from_inventory(settings).events_topic_arn},
        "model-serving": {**aws, "redis-url": redis_url},
        "model-training": dict(aws),
    }


class HostServices:
    """The local target's Level 0 and Prometheus for a cluster that has none, relayed to pods."""

    def __init__(self, settings: Settings, host_address: str,
                 prometheus_access: ApiAccess | None = None) -> None:
        from ..local.target import LocalTarget

        self.settings = settings
        self.host_address = host_address
        self.prometheus_access = prometheus_access
        self.local = LocalTarget(settings.with_(target="local"),
                                 component_options={"prometheus": self.prometheus_options()})
        self.run_dir = settings.state_dir / "kube"

    def prometheus_options(self) -> dict[str, Any]:
        """The host Prometheus as the cluster needs it: the binary built from the Prometheus Go
        module (Debian's has no ``kubernetes_sd_configs``) with the pod job of
        :func:`~clinops_lib.clusters.debian.metrics.pod_scrape_job` against this cluster's API
        server, its only view of the pods. Nothing is checked or built here (a status call
        constructs this too): :meth:`ensure_prometheus` does that before Prometheus starts."""
        from ...clusters.debian.build import BuildCache

        if self.prometheus_access is None:
            return {}
        return {"binary": BuildCache(self.settings.cache_dir).prometheus,
                "extra_scrape_configs": [pod_scrape_job(self.prometheus_access)]}

    def ensure_prometheus(self, progress: Progress) -> None:
        """Refuse a cluster whose facts or files do not let Prometheus discover its pods; build the
        module's Prometheus when it is not cached yet (``clinops cluster build`` builds it first)."""
        from ...clusters.debian.build import BuildCache, build_prometheus

        access = self.prometheus_access
        if access is None:
            raise PrerequisiteError(
                "the cluster's facts (kube-public/clinops-cluster) do not say how Prometheus reaches its "
                "API server (a cluster created by older code): `clinops cluster delete` and create it again")
        missing = access.missing()
        if missing:
            raise PrerequisiteError("the cluster's Prometheus identity files are missing: "
                                    f"{', '.join(missing)} (this host is not the cluster's; "
                                    "`clinops cluster create` writes them)")
        cache = BuildCache(self.settings.cache_dir)
        if not cache.prometheus_ready():
            progress("host: building Prometheus with Kubernetes discovery from its Go module (once, cached)")
            build_prometheus(cache, progress=lambda m: progress(f"host: {m}"))

    def scraped_pods(self, namespace: str) -> set[str]:
        """The pods of ``namespace`` the host Prometheus scrapes successfully (health up)."""
        import httpx

        try:
            data = httpx.get(f"{self.settings.prometheus_url}/api/v1/targets", params={"state": "active"},
                             timeout=5.0).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return set()
        return {str(t["labels"].get("pod")) for t in data
                if t.get("health") == "up" and t.get("labels", {}).get("job") == POD_JOB
                and t["labels"].get("namespace") == namespace}

    def metrics_source(self) -> str:
        """How the host Prometheus sees the pods, for the evidence: the job, its discovery and
        how many pods it scrapes right now (asked from Prometheus itself)."""
        import httpx

        base = f"kubernetes_sd_configs (role pod, job {POD_JOB}) of the host Prometheus against "
        base += self.prometheus_access.server if self.prometheus_access else "(no API access in the facts)"
        try:
            data = httpx.get(f"{self.settings.prometheus_url}/api/v1/targets", params={"state": "active"},
                             timeout=5.0).json()["data"]["activeTargets"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            return f"{base}; targets unreadable: {type(e).__name__}"
        pods = [t for t in data if (t.get("labels") or {}).get("job") == POD_JOB]
        up = sum(1 for t in pods if t.get("health") == "up")
        return f"{base}; {up}/{len(pods)} discovered pods up"

    def port(self, name: str) -> int:
        return RELAYED[name](self.settings.ports)

    def address(self, name: str) -> str:
        """``host:port`` where pods reach ``name``."""
        return f"{self.host_address}:{self.port(name)}"

    def buckets(self) -> dict[str, str]:
        """The chart's ``global.buckets`` as the AWS inventory names them in this environment: the
        inventory is what 00-provision applies to the host's LocalStack (the charts' own defaults
        name buckets that no inventory creates)."""
        from ...inventory import service_resources

        res = service_resources(self.settings.environment, endpoint=self.settings.localstack_url)
        return {"artifacts": res["CLINOPS_BUCKET_MODEL_ARTIFACTS"],
                "features": res["CLINOPS_BUCKET_FEATURE_STORE"], "backups": res["CLINOPS_BUCKET_BACKUPS"]}

    def up(self, level: int, progress: Progress) -> bool:
        """Start the local components of ``level`` (if any) and their relays; True if anything started."""
        names = HOST_LEVELS.get(level, ())
        if not names:
            return False
        if "prometheus" in names:
            self.ensure_prometheus(progress)
        rows = self.local.up([level], progress=lambda m: progress(f"host: {m}"))
        mine = [r for r in rows if r.component in names]
        changed = any(r.health == "healthy" and r.detail != "already up" for r in mine)
        bad = [f"{r.component}: {r.health} {r.detail}" for r in rows
               if r.component in names and r.health != "healthy"]
        if bad:
            raise ComponentError("host level 0", "; ".join(bad), str(self.settings.state_dir / "logs"))
        for name in names:
            changed |= self._relay(name, progress)
        return changed

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"relay-{name}.pid"

    def _relay_alive(self, name: str) -> bool:
        proc = sup.read_pid_file(self._pid_file(name))
        return proc is not None and sup.is_alive(proc.pid, proc.start_ticks)

    def _reachable(self, name: str) -> bool:
        address = (self.host_address, self.port(name))
        with contextlib.suppress(OSError), socket.create_connection(address, 1.0):
            return True
        return False

    def _relay(self, name: str, progress: Progress) -> bool:
        """``socat`` from ``host_address:port`` to ``127.0.0.1:port``, bound to that address only."""
        if self._relay_alive(name):
            return False
        port = self.port(name)
        log = self.settings.state_dir / "logs" / f"relay-{name}.log"
        if sup.port_in_use(port, self.host_address):
            raise ComponentError(f"relay {name}", f"{self.host_address}:{port} is taken by another process",
                                 str(log))
        spec = sup.ProcessSpec(
            name=f"relay-{name}",
            argv=["socat", f"TCP-LISTEN:{port},bind={self.host_address},reuseaddr,fork",
                  f"TCP:127.0.0.1:{port}"],
            log_file=log, pid_file=self._pid_file(name))
        proc = sup.start(spec)
        sup.wait_healthy(proc, lambda: self._reachable(name), 15.0, f"relay {self.address(name)} -> {name}")
        progress(f"host: {name} relayed to pods at {self.address(name)}")
        return True

    def status(self) -> dict[str, ComponentStatus]:
        """The local target's rows of the host components, with where pods reach them."""
        rows = self.local._observe()
        out = {}
        for names in HOST_LEVELS.values():
            for name in names:
                row = rows.get(name)
                if row is None:
                    continue
                relay = "relay up" if self._relay_alive(name) else "relay DOWN"
                healthy = row.health == "healthy" and self._relay_alive(name)
                out[name] = ComponentStatus(
                    level=row.level, component=name, health="healthy" if healthy else
                    ("unhealthy" if row.health == "healthy" else row.health), version=row.version,
                    endpoint=f"{self.address(name)} (host, {relay})",
                    detail=f"on the host (the local target's {name}); {row.detail}".rstrip("; "),
                    seconds_to_ready=row.seconds_to_ready, started_at=row.started_at, ready_at=row.ready_at,
                    log_file=row.log_file)
        return out

    def down(self) -> None:
        for name in RELAYED:
            proc = sup.read_pid_file(self._pid_file(name))
            if proc is not None:
                sup.stop(proc)
            self._pid_file(name).unlink(missing_ok=True)
        self.local.down()

    def close(self) -> None:
        self.local.close()


def import_images(socket_path: str, cache_root: Path, project_root: Path, references: Mapping[str, str],
                  progress: Progress, *, environment: str = "dev") -> list[str]:
    """Build (cached by input hash) and import the images of ``references`` ({service folder:
    reference as the profile pins it}) into the cluster's containerd; returns what was imported.

    An archive holds the reference it was first built under; the profile's reference is added as
    a tag in containerd (``ctr images tag``), like any retag of one image.
    """
    from ...clusters.debian.images import ImageBuilder, chart_references

    present = set(images_in(socket_path))
    wanted = {svc: ref for svc, ref in references.items() if ref not in present}
    if not wanted:
        return []
    built_as = chart_references(project_root, environment)
    builder = ImageBuilder(project_root, cache_root, progress=progress)
    done = []
    for image in builder.build({svc: built_as[svc] for svc in wanted}):
        _ctr(socket_path, ["images", "import", "--all-platforms", str(image.archive)], timeout=600)
        for svc, ref in wanted.items():
            if built_as[svc] == image.reference and ref != image.reference:
                tag(socket_path, image.reference, ref)
        done.append(image.reference)
    return done


def images_in(socket_path: str) -> list[str]:
    out = _ctr(socket_path, ["images", "list", "-q"], timeout=60)
    return [line.strip() for line in out.splitlines() if line.strip()]


def tag(socket_path: str, source: str, target: str) -> None:
    _ctr(socket_path, ["images", "tag", "--force", source, target], timeout=60)


def _ctr(socket_path: str, args: list[str], *, timeout: float) -> str:
    argv = ["ctr", "--address", socket_path, "-n", "k8s.io", *args]
    t0 = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise PrerequisiteError("ctr (Debian containerd) is needed to import images into the cluster") from e
    except subprocess.TimeoutExpired as e:
        raise ComponentError("containerd", f"{' '.join(args[:2])} timed out after {timeout:g}s", "") from e
    if out.returncode != 0:
        raise ComponentError("containerd", f"ctr {' '.join(args)} failed after {time.monotonic() - t0:.1f}s: "
                             f"{out.stderr.strip()[-400:]}", "")
    return out.stdout


def profile_references(values: Mapping[str, Any], chart_refs: Mapping[str, str]) -> dict[str, str]:
    """``{service folder: reference}`` under the profile's ``global.imageRegistry``."""
    registry = str(((values.get("global") or {}).get("imageRegistry")) or "")
    out = {}
    for svc, ref in chart_refs.items():
        name_tag = ref.rsplit("/", 1)[-1]
        out[svc] = f"{registry}/{name_tag}" if registry else name_tag
    return out
