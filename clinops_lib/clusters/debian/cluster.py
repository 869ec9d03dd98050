"""A single-node Kubernetes v1.20.2 made of supervised processes: create, status, delete.

Components, in start order, each started by the local target's supervisor (own session, log
file, pid file with the kernel start time) and each waited for with a health check that names
the component and its log file when it fails:

=====================  ==========================================  ===============================
component              binary                                      healthy when
=====================  ==========================================  ===============================
containerd             Debian ``containerd`` 1.6 (CRI, runc)       ``ctr version`` answers
etcd                   Debian ``etcd-server`` 3.4                  ``/health`` says true
kube-apiserver         built from Debian's source (build.py)       ``/readyz`` = ok (admin cert)
kube-controller-mgr    built                                       ``/healthz`` = ok
kube-scheduler         built                                       ``/healthz`` = ok
kubelet                built (remote runtime = containerd's CRI)   ``/healthz`` = ok, node Ready
kube-proxy             built (iptables mode)                       ``/healthz`` answers 200
rollouts-controller    Argo Rollouts v1.8.3 from module source     ``/healthz`` = ok
=====================  ==========================================  ===============================

Networking is containerd's CNI with the ``bridge`` + ``host-local`` + ``portmap`` plugins
(``cni0``, pods in 10.88.0.0/16), Services in 10.0.0.0/24 through kube-proxy's iptables rules.
There is no cluster DNS (no CoreDNS image without a registry): pods reach Services by their
ClusterIP or the ``*_SERVICE_HOST`` variables. The API server advertises the node's address so
pods reach it through the ``kubernetes`` Service.

Two facts of this kind of machine are built in: root lacks ``CAP_SYS_RESOURCE``, so containerd's
CRI runs with ``restrict_oom_score_adj = true`` (otherwise every pod sandbox fails with
"can't get final child's PID from pipe"); and the cgroup hierarchy is v1 (cgroupfs driver).

If anything fails while creating, everything already started is stopped and the host state is
cleaned again (the logs stay), as the local target does. ``delete`` stops the pods first (so
kubelet runs CNI DEL for each), then every component in reverse order, then removes what the
components leave on the host (see host.py) and checks that nothing is left.

One cluster per machine: kubelet and the CNI plugins use host-wide names (``cni0``, iptables
chains, ``/var/lib/kubelet``). A lock file serialises create/delete between processes.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from ...exceptions import ComponentError, KubernetesAPIError, PrerequisiteError, TargetError, WaitTimeout
from ...targets.local import supervisor
from . import host
from .api import ClusterApi
from .build import ARGO_ROLLOUTS_VERSION, KUBERNETES_VERSION, BuildCache, build_all
from .metrics import PROMETHEUS_CLIENT_IDENTITY, pod_scrape_rbac
from .oci import ImageConfig, ImageFile, write_oci_archive
from .pki import Pki, make_pki

__all__ = [
    "CHART_PROFILE",
    "CONTEXT",
    "FACTS_NAME",
    "FACTS_NAMESPACE",
    "PAUSE_IMAGE",
    "ClusterConfig",
    "ClusterInfo",
    "ClusterPorts",
    "ComponentState",
    "DebianCluster",
]

CONTEXT = "clinops-debian"
PAUSE_IMAGE = "registry.local/pause:3.2"
ROLLOUTS_NAMESPACE = "argo-rollouts"
#: where ``create`` writes what the cluster is (``DebianCluster.facts``)
FACTS_NAMESPACE, FACTS_NAME = "kube-public", "clinops-cluster"
#: the umbrella chart's values profile for this cluster (charts/clinical-mlops/values-local-cluster.yaml)
CHART_PROFILE = "local-cluster"
TRAFFIC_MODE = ("Argo Rollouts without a traffic router: basic canary (the weight is the canary's share "
                "of replicas behind one Service, balanced per connection by kube-proxy); blue-green by "
                "the active/preview Services' selectors")
ROLLOUTS_IDENTITY = f"system:serviceaccount:{ROLLOUTS_NAMESPACE}:argo-rollouts"
DEFAULT_ROOT = Path("/var/lib/clinops/debian-cluster")
RUNTIME_PACKAGES = {  # what must be on the machine -> Debian package
    "/usr/bin/etcd": "etcd-server",
    "/usr/bin/containerd": "containerd",
    "/usr/bin/containerd-shim-runc-v2": "containerd",
    "/usr/bin/ctr": "containerd",
    "/usr/sbin/runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/lib/cni/host-local": "containernetworking-plugins",
    "/usr/lib/cni/portmap": "containernetworking-plugins",
    "/usr/lib/cni/loopback": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/conntrack": "conntrack",
    "/usr/bin/socat": "socat",
    "/usr/sbin/ip": "iproute2",
}

Progress = Callable[[str], None]
#: see ClusterConfig.go_memory_limits. Empty by default: with kube-apiserver at GOMEMLIMIT=256MiB
#: (and the others at 32-64MiB) the Rollouts CRDs' install timed out at load ~30 (the garbage
#: collector near the limit while the API server builds the CRDs' OpenAPI models), so a limit
#: needs measuring per component before it becomes a default.
GO_MEMORY_LIMITS: dict[str, str] = {}


def _quiet(_: str) -> None:
    return None


def _default_node_ip() -> str:
    """The address of the interface that carries the default route (pods reach the API there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))  # no packet is sent: connect() on UDP only picks a route
            return str(s.getsockname()[0])
        except OSError:
            pass
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=False
    )
    for line in out.stdout.splitlines():
        return line.split()[3].split("/")[0]
    raise PrerequisiteError("no global IPv4 address on this machine: pods could not reach the API server")


@dataclass(frozen=True)
class ClusterPorts:
    """Every TCP port of the cluster, from one base (kubelet's 10250 etc. are all moved).

    The default block lies below Linux's ephemeral range (32768-60999): ports in that range are
    handed to outgoing connections (the components' own connections to the API server among
    them), so a listener there can find its port taken by a client socket. One cluster runs per
    machine, so the block is fixed rather than derived from the local target's port base.
    """

    base: int = 16440

    @property
    def etcd_client(self) -> int:
        return self.base

    @property
    def etcd_peer(self) -> int:
        return self.base + 1

    @property
    def apiserver(self) -> int:
        return self.base + 2

    @property
    def controller_manager(self) -> int:
        return self.base + 3

    @property
    def scheduler(self) -> int:
        return self.base + 4

    @property
    def kubelet(self) -> int:
        return self.base + 5

    @property
    def kubelet_healthz(self) -> int:
        return self.base + 6

    @property
    def proxy_metrics(self) -> int:
        return self.base + 7

    @property
    def proxy_healthz(self) -> int:
        return self.base + 8

    @property
    def rollouts_healthz(self) -> int:
        return self.base + 9

    @property
    def rollouts_metrics(self) -> int:
        return self.base + 10

    def all(self) -> list[int]:
        return [self.base + i for i in range(11)]


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster lives and how it is wired. Everything has a working default."""

    root: Path = DEFAULT_ROOT
    cache: BuildCache = field(default_factory=BuildCache)
    ports: ClusterPorts = field(default_factory=ClusterPorts)
    node_name: str = field(default_factory=lambda: socket.gethostname().split(".")[0].lower())
    node_ip: str = ""  # "" = the default route's address
    service_cidr: str = "10.0.0.0/24"
    service_ip: str = "10.0.0.1"  # first address of service_cidr: the `kubernetes` Service
    pod_cidr: str = "10.88.0.0/16"
    pod_gateway: str = "10.88.0.1"
    rollouts: bool = True  # also run the Argo Rollouts controller
    build: bool = True  # build missing binaries (else: fail naming `clinops cluster build`)
    ready_timeout: float = 180.0
    #: Go's soft memory limit per component (GOMEMLIMIT, Go >= 1.19: every binary here): the
    #: garbage collector works harder near it instead of letting the heap double (GOGC=100).
    #: It must sit above the component's live heap at its busiest (a soft limit, but the collector
    #: spends CPU near it), so it trims idle memory without slowing the component.
    go_memory_limits: Mapping[str, str] = field(default_factory=lambda: dict(GO_MEMORY_LIMITS))


@dataclass(frozen=True)
class ComponentState:
    name: str
    pid: int | None
    alive: bool
    healthy: bool
    detail: str
    log_file: str


@dataclass(frozen=True)
class ClusterInfo:
    """What ``create`` made: recorded in ``state.json`` and printed by the CLI."""

    kubeconfig: str
    context: str
    server: str
    node: str
    node_ip: str
    kubernetes_version: str
    rollouts_controller: bool
    seconds_to_ready: float
    created_at: str
    root: str
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class DebianCluster:
    """The lifecycle of the single-node cluster in ``config.root``."""

    def __init__(self, config: ClusterConfig | None = None, *, progress: Progress = _quiet) -> None:
        self.config = config or ClusterConfig()
        self.progress = progress
        c = self.config
        self.root = c.root
        self.pki = Pki(c.root / "pki")
        self.logs = c.root / "logs"
        self.run_dir = c.root / "run"
        self.containerd_dir = c.root / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.kubeconfig = c.root / "admin.kubeconfig"
        self.state_file = c.root / "state.json"
        self._node_ip = c.node_ip
        self._started: list[supervisor.RunningProcess] = []

    # -- facts -----------------------------------------------------------------------------
    @property
    def node_ip(self) -> str:
        if not self._node_ip:
            self._node_ip = _default_node_ip()
        return self._node_ip

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.config.ports.apiserver}"

    def binary(self, name: str) -> Path:
        if name == "rollouts-controller":
            return self.config.cache.rollouts_controller
        return self.config.cache.kubernetes_binary(name)

    def _binaries(self) -> list[Path]:
        names = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "pause",
            "rollouts-controller",
        ]
        return [self.binary(n) for n in names]

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def _pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.pid"

    def info(self) -> ClusterInfo | None:
        try:
            return ClusterInfo(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def api(self, identity: str = "admin", timeout: float = 10.0) -> ClusterApi:
        return ClusterApi(
            self.server, self.pki.ca, self.pki.cert(identity), self.pki.key(identity), timeout=timeout
        )

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f".{self.root.name}.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TargetError(
                    f"another process is creating or deleting the cluster in {self.root} (lock {f.name})"
                ) from None
            yield

    # -- preflight -----------------------------------------------------------------------------
    def missing_runtime(self) -> list[str]:
        missing = []
        if os.geteuid() != 0:
            missing.append("root (kubelet, containerd and kube-proxy manage mounts, cgroups and iptables)")
        for path, package in RUNTIME_PACKAGES.items():
            if not os.access(path, os.X_OK):
                missing.append(f"{path} (package {package})")
        return missing

    def _ensure_binaries(self) -> None:
        cache = self.config.cache
        need_rollouts = self.config.rollouts and not cache.rollouts_ready()
        if cache.kubernetes_ready() and not need_rollouts:
            return
        if not self.config.build:
            raise PrerequisiteError(
                f"the cluster's binaries are not built in {cache.root} (run `clinops cluster build`)"
            )
        build_all(cache, progress=self.progress, rollouts=self.config.rollouts)

    # -- files -------------------------------------------------------------------------------
    def _kubeconfig_for(self, identity: str, path: Path, namespace: str | None = None) -> Path:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        context: dict[str, Any] = {"cluster": CONTEXT, "user": identity}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": CONTEXT,
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {"server": self.server, "certificate-authority-data": b64(self.pki.ca)},
                }
            ],
            "users": [
                {
                    "name": identity,
                    "user": {
                        "client-certificate-data": b64(self.pki.cert(identity)),
                        "client-key-data": b64(self.pki.key(identity)),
                    },
                }
            ],
            "contexts": [{"name": CONTEXT, "context": context}],
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        return path

    def _write_configs(self) -> None:
        c = self.config
        root = self.root
        (root / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        self.containerd_dir.mkdir(parents=True, exist_ok=True)
        (root / "containerd" / "config.toml").write_text(f"""\
version = 2
root = "{self.containerd_dir}/root"
state = "{self.containerd_dir}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  # root here lacks CAP_SYS_RESOURCE: runc cannot give sandboxes kubelet's negative oom_score_adj
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{root}/cni/net.d"
""")
        conflist = {
            "cniVersion": "0.4.0",
            "name": "k8s-pod-network",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": host.BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": c.pod_cidr, "gateway": c.pod_gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(root / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (root / "cni" / "net.d" / "10-bridge.conflist").write_text(json.dumps(conflist, indent=1))
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "address": "0.0.0.0",
            "port": c.ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": c.ports.kubelet_healthz,
            "tlsCertFile": str(self.pki.cert("kubelet-serving")),
            "tlsPrivateKeyFile": str(self.pki.key("kubelet-serving")),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki.ca)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "imageGCHighThresholdPercent": 100,  # the images cannot be pulled again: never collect them
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "serializeImagePulls": False,
            # Ready is posted on the first status tick after PLEG and CNI are up (default 10 s)
            "nodeStatusUpdateFrequency": "2s",
        }
        (root / "kubelet-config.yaml").write_text(yaml.safe_dump(kubelet_config, sort_keys=False))
        for identity in ("admin", "kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"):
            self._kubeconfig_for(identity, root / f"{identity}.kubeconfig")
        if c.rollouts:
            self._kubeconfig_for(
                "argo-rollouts", root / "argo-rollouts.kubeconfig", namespace=ROLLOUTS_NAMESPACE
            )

    def _pause_archive(self) -> Path:
        """The pause image, built from the compiled pause binary and cached next to it."""
        pause = self.config.cache.pause_binary
        out = self.config.cache.kubernetes / "images" / "pause.tar"
        stamp = out.with_suffix(".source")
        key = f"{pause.stat().st_size}:{pause.stat().st_mtime_ns}"
        if not out.is_file() or not stamp.is_file() or stamp.read_text() != key:
            write_oci_archive(
                out,
                PAUSE_IMAGE,
                [ImageFile("pause", source=pause, mode=0o755)],
                ImageConfig(entrypoint=["/pause"], env=()),
            )
            stamp.write_text(key)
        return out

    # -- process specs -------------------------------------------------------------------------
    def _specs(self) -> dict[str, supervisor.ProcessSpec]:
        c, p, r = self.config, self.pki, self.root
        ports = c.ports

        def spec(name: str, argv: Sequence[str], tcp: Sequence[int] = ()) -> supervisor.ProcessSpec:
            limit = c.go_memory_limits.get(name)
            return supervisor.ProcessSpec(
                name=name,
                argv=list(argv),
                log_file=self.log_file(name),
                pid_file=self._pid_file(name),
                ports=list(tcp),
                env={"GOMEMLIMIT": limit} if limit else {},
                cwd=r,
            )

        kcm_cfg = str(r / "kube-controller-manager.kubeconfig")
        sched_cfg = str(r / "kube-scheduler.kubeconfig")
        specs = {
            "containerd": spec(
                "containerd", ["/usr/bin/containerd", "--config", str(r / "containerd" / "config.toml")]
            ),
            "etcd": spec(
                "etcd",
                [
                    "/usr/bin/etcd",
                    "--name",
                    "clinops",
                    "--data-dir",
                    str(r / "etcd-data"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{ports.etcd_client}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{ports.etcd_client}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{ports.etcd_peer}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{ports.etcd_peer}",
                    "--initial-cluster",
                    f"clinops=http://127.0.0.1:{ports.etcd_peer}",
                    "--logger=zap",
                    "--unsafe-no-fsync",  # a throw-away cluster: speed over durability
                    # raft entries kept in memory between snapshots (3.4's default 100000 grows
                    # the heap of a cluster that only lives for a test run)
                    "--snapshot-count=5000",
                ],
                [ports.etcd_client, ports.etcd_peer],
            ),
            "kube-apiserver": spec(
                "kube-apiserver",
                [
                    str(self.binary("kube-apiserver")),
                    f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
                    "--bind-address=0.0.0.0",
                    f"--advertise-address={self.node_ip}",
                    f"--secure-port={ports.apiserver}",
                    "--insecure-port=0",
                    f"--tls-cert-file={p.cert('apiserver')}",
                    f"--tls-private-key-file={p.key('apiserver')}",
                    f"--client-ca-file={p.ca}",
                    f"--kubelet-client-certificate={p.cert('apiserver-kubelet-client')}",
                    f"--kubelet-client-key={p.key('apiserver-kubelet-client')}",
                    f"--kubelet-certificate-authority={p.ca}",
                    "--kubelet-preferred-address-types=InternalIP,Hostname",
                    f"--service-account-key-file={p.sa_pub}",
                    f"--service-account-signing-key-file={p.sa_key}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-cluster-ip-range={c.service_cidr}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=true",
                    "--profiling=false",
                ],
                [ports.apiserver],
            ),
            "kube-controller-manager": spec(
                "kube-controller-manager",
                [
                    str(self.binary("kube-controller-manager")),
                    f"--kubeconfig={kcm_cfg}",
                    f"--authentication-kubeconfig={kcm_cfg}",
                    f"--authorization-kubeconfig={kcm_cfg}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={ports.controller_manager}",
                    "--port=0",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={p.sa_key}",
                    f"--root-ca-file={p.ca}",
                    "--use-service-account-credentials=true",
                    f"--cluster-signing-cert-file={p.ca}",
                    f"--cluster-signing-key-file={p.key('ca')}",
                    f"--service-cluster-ip-range={c.service_cidr}",
                    "--controllers=*",
                    "--profiling=false",
                ],
                [ports.controller_manager],
            ),
            "kube-scheduler": spec(
                "kube-scheduler",
                [
                    str(self.binary("kube-scheduler")),
                    f"--kubeconfig={sched_cfg}",
                    f"--authentication-kubeconfig={sched_cfg}",
                    f"--authorization-kubeconfig={sched_cfg}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={ports.scheduler}",
                    "--port=0",
                    "--leader-elect=false",
                    "--profiling=false",
                ],
                [ports.scheduler],
            ),
            "kubelet": spec(
                "kubelet",
                [
                    str(self.binary("kubelet")),
                    f"--config={r / 'kubelet-config.yaml'}",
                    f"--kubeconfig={r / 'kubelet.kubeconfig'}",
                    f"--root-dir={r / 'kubelet'}",
                    f"--node-ip={self.node_ip}",
                    f"--hostname-override={c.node_name}",
                    "--container-runtime=remote",
                    f"--container-runtime-endpoint=unix://{self.socket}",
                    f"--pod-infra-container-image={PAUSE_IMAGE}",
                ],
                [ports.kubelet, ports.kubelet_healthz],
            ),
            "kube-proxy": spec(
                "kube-proxy",
                [
                    str(self.binary("kube-proxy")),
                    f"--kubeconfig={r / 'kube-proxy.kubeconfig'}",
                    f"--hostname-override={c.node_name}",
                    "--proxy-mode=iptables",
                    f"--cluster-cidr={c.pod_cidr}",
                    "--conntrack-max-per-core=0",
                    f"--metrics-bind-address=127.0.0.1:{ports.proxy_metrics}",
                    f"--healthz-bind-address=127.0.0.1:{ports.proxy_healthz}",
                ],
                [ports.proxy_metrics, ports.proxy_healthz],
            ),
        }
        if c.rollouts:
            specs["rollouts-controller"] = spec(
                "rollouts-controller",
                [
                    str(self.binary("rollouts-controller")),
                    f"--kubeconfig={r / 'argo-rollouts.kubeconfig'}",
                    f"--healthzPort={ports.rollouts_healthz}",
                    f"--metricsport={ports.rollouts_metrics}",
                    "--leader-elect=false",
                    "--loglevel=info",
                ],
                [ports.rollouts_healthz, ports.rollouts_metrics],
            )
        return specs

    # -- health checks -------------------------------------------------------------------------
    def _http_ok(self, url: str, *, expect: str | None = None) -> bool:
        resp = httpx.get(url, verify=False, timeout=3.0)  # noqa: S501 - loopback healthz of self-signed servers
        return resp.status_code == 200 and (expect is None or resp.text.strip() == expect)

    def _containerd_ok(self) -> bool:
        if not self.socket.exists():
            return False
        out = subprocess.run(
            ["ctr", "--address", str(self.socket), "version"], capture_output=True, timeout=10, check=False
        )
        return out.returncode == 0

    def _apiserver_ok(self) -> bool:
        with self.api(timeout=3.0) as api:
            return api.text("/readyz").strip() == "ok"

    def _checks(self) -> dict[str, tuple[Callable[[], bool], str]]:
        ports = self.config.ports
        return {
            "containerd": (self._containerd_ok, "to answer on its socket"),
            "etcd": (
                lambda: (
                    '"health":"true"'
                    in httpx.get(f"http://127.0.0.1:{ports.etcd_client}/health", timeout=3.0).text
                ),
                "/health",
            ),
            "kube-apiserver": (self._apiserver_ok, "/readyz"),
            "kube-controller-manager": (
                lambda: self._http_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz", expect="ok"),
                "/healthz",
            ),
            "kube-scheduler": (
                lambda: self._http_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", expect="ok"),
                "/healthz",
            ),
            "kubelet": (
                lambda: self._http_ok(f"http://127.0.0.1:{ports.kubelet_healthz}/healthz", expect="ok"),
                "/healthz",
            ),
            "kube-proxy": (
                lambda: self._http_ok(f"http://127.0.0.1:{ports.proxy_healthz}/healthz"),
                "/healthz",
            ),
            "rollouts-controller": (
                lambda: self._http_ok(f"http://127.0.0.1:{ports.rollouts_healthz}/healthz"),
                "/healthz",
            ),
        }

    def _start(self, name: str, specs: dict[str, supervisor.ProcessSpec], timeout: float) -> float:
        proc = supervisor.start(specs[name])
        self._started.append(proc)
        check, what = self._checks()[name]
        return supervisor.wait_healthy(proc, check, timeout, what)

    # -- lifecycle -------------------------------------------------------------------------------
    def running(self) -> bool:
        """Every component's process is alive (does not probe health)."""
        if not self.state_file.is_file():
            return False
        for name in self._specs():
            proc = supervisor.read_pid_file(self._pid_file(name))
            if proc is None or not supervisor.is_alive(proc.pid, proc.start_ticks):
                return False
        return True

    def create(self) -> ClusterInfo:
        """Start the cluster (building binaries first if needed); returns when the node is Ready.

        Idempotent: a cluster whose components all run is returned as it is.
        """
        missing = self.missing_runtime()
        if missing:
            raise PrerequisiteError(
                "cannot run the Debian cluster, missing: "
                + "; ".join(missing)
                + " (install them with `bash scripts/setup-cluster.sh`)"
            )
        self._ensure_binaries()
        with self._lock():
            if self.running() and (info := self.info()) is not None:
                self.progress(f"cluster already running (kubeconfig {info.kubeconfig})")
                return info
            t0 = time.monotonic()
            self._teardown(graceful=False, rotate_logs=True)  # traces of an earlier, broken cluster
            phases: dict[str, float] = {"clean": time.monotonic() - t0}
            try:
                info = self._create(t0, phases)
            except BaseException as e:
                self.progress(f"create failed ({type(e).__name__}); stopping everything it started")
                self._teardown(graceful=False)
                raise
        return info

    def _phase(self, phases: dict[str, float], name: str, t0: float) -> None:
        phases[name] = round(time.monotonic() - t0, 2)
        self.progress(f"{phases[name]:6.1f}s {name}")

    def _create(self, t0: float, phases: dict[str, float]) -> ClusterInfo:
        c = self.config
        for d in (self.logs, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        make_pki(
            self.pki.folder,
            node_name=c.node_name,
            node_ip=self.node_ip,
            service_ip=c.service_ip,
            extra_clients={
                **({"argo-rollouts": ("system:serviceaccounts", ROLLOUTS_IDENTITY)} if c.rollouts else {}),
                **PROMETHEUS_CLIENT_IDENTITY,  # the host's Prometheus discovering pods (metrics.py)
            },
        )
        self._write_configs()
        pause = self._pause_archive()
        host.set_sysctls()
        host.ensure_bridge(c.pod_gateway, int(c.pod_cidr.rsplit("/", 1)[1]))
        self._phase(phases, "pki, configs and pause image", t0)
        specs = self._specs()
        self._start("containerd", specs, 60)
        self.import_image(pause)
        self._phase(phases, "containerd up, pause image imported", t0)
        self._start("etcd", specs, 60)
        self._start("kube-apiserver", specs, 120)
        self._phase(phases, "kube-apiserver ready", t0)
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
            proc = supervisor.start(specs[name])
            self._started.append(proc)
        for proc in self._started[-4:]:
            check, what = self._checks()[proc.name]
            supervisor.wait_healthy(proc, check, 90, what)
        self._phase(phases, "controller-manager, scheduler, kubelet, kube-proxy healthy", t0)
        self._wait_node_ready(c.ready_timeout)
        self._phase(phases, "node Ready", t0)
        self._wait_default_service_account(60)
        self._phase(phases, "default ServiceAccount exists", t0)
        with self.api(timeout=30.0) as api:
            for obj in pod_scrape_rbac():  # Prometheus' pod discovery: read-only on pods
                api.apply(obj)
        if c.rollouts:
            from .argo import install_rollouts

            with self.api(timeout=60.0) as api:  # the CRDs are large: slow to admit on a busy machine
                install_rollouts(api, c.cache.rollouts_source, namespace=ROLLOUTS_NAMESPACE)
            self._start("rollouts-controller", specs, 90)
            self._phase(phases, "Argo Rollouts CRDs + RBAC installed, controller healthy", t0)
        with self.api(timeout=30.0) as api:
            api.apply(self.facts())
        self._phase(phases, f"cluster facts in {FACTS_NAMESPACE}/{FACTS_NAME}", t0)
        info = ClusterInfo(
            kubeconfig=str(self.kubeconfig),
            context=CONTEXT,
            server=self.server,
            node=c.node_name,
            node_ip=self.node_ip,
            kubernetes_version=KUBERNETES_VERSION,
            rollouts_controller=c.rollouts,
            seconds_to_ready=phases["node Ready"],
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            root=str(self.root),
            phases=phases,
        )
        self.state_file.write_text(json.dumps(info.to_json(), indent=2))
        return info

    def facts(self) -> dict[str, Any]:
        """The ConfigMap that tells a client (the ``kubeconfig`` target, an evidence bundle) what
        this cluster is and lacks, read from the cluster itself rather than guessed from a
        kubeconfig's name: provider, Kubernetes version, the chart values profile written for it,
        the address pods reach the host at (Level 0 lives there), where its containerd imports
        images, and the traffic mode (no traffic router: Argo Rollouts' basic canary)."""
        c = self.config
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": FACTS_NAME, "namespace": FACTS_NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "clinops"}},
            "data": {
                "provider": "debian",
                "kubernetesVersion": KUBERNETES_VERSION,
                "node": c.node_name,
                "chartProfile": CHART_PROFILE,
                "hostAddress": c.pod_gateway,
                "containerdSocket": str(self.socket),
                "rolloutsController": (f"argo-rollouts {ARGO_ROLLOUTS_VERSION} (host process)"
                                       if c.rollouts else "none"),
                "trafficMode": TRAFFIC_MODE,
                # kube-proxy's metrics: when its rules last synced (a client waits for a change
                # of endpoints to reach the rules, e.g. traffic off an aborted canary)
                "kubeProxyMetrics": f"http://127.0.0.1:{c.ports.proxy_metrics}/metrics",
            },
        }

    def _wait_node_ready(self, timeout: float) -> None:
        name = self.config.node_name
        last = ["node not registered yet"]

        def ready() -> bool:
            with self.api(timeout=3.0) as api:
                node = api.get(f"/api/v1/nodes/{name}", allow_missing=True)
            if node is None:
                return False
            for cond in node.get("status", {}).get("conditions") or []:
                if cond.get("type") == "Ready":
                    last[0] = f"Ready={cond.get('status')} ({cond.get('reason')}: {cond.get('message')})"
                    return bool(cond.get("status") == "True")
            return False

        kubelet = next(p for p in self._started if p.name == "kubelet")
        try:
            supervisor.wait_healthy(kubelet, ready, timeout, f"node {name} Ready")
        except ComponentError as e:
            raise ComponentError(
                "kubelet", f"node {name} not Ready: {last[0]} ({e})", str(self.log_file("kubelet"))
            ) from e

    def _wait_default_service_account(self, timeout: float) -> None:
        def exists() -> bool:
            with self.api(timeout=3.0) as api:
                return (
                    api.get("/api/v1/namespaces/default/serviceaccounts/default", allow_missing=True)
                    is not None
                )

        kcm = next(p for p in self._started if p.name == "kube-controller-manager")
        supervisor.wait_healthy(kcm, exists, timeout, "the default ServiceAccount in namespace default")

    def import_image(self, archive: Path, *, timeout: float = 600.0) -> None:
        """Load an OCI/Docker archive into containerd's ``k8s.io`` namespace (what kubelet sees)."""
        out = subprocess.run(
            [
                "ctr",
                "--address",
                str(self.socket),
                "-n",
                "k8s.io",
                "images",
                "import",
                "--all-platforms",
                str(archive),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise ComponentError(
                "containerd",
                f"importing image archive {archive} failed: {(out.stderr or out.stdout).strip()[-400:]}",
                str(self.log_file("containerd")),
            )

    def images(self) -> list[str]:
        out = subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return [ln for ln in out.stdout.splitlines() if ln and not ln.startswith("sha256:")]

    def status(self) -> list[ComponentState]:
        states = []
        checks = self._checks()
        for name in self._specs():
            proc = supervisor.read_pid_file(self._pid_file(name))
            alive = proc is not None and supervisor.is_alive(proc.pid, proc.start_ticks)
            healthy, detail = False, "not running"
            if alive:
                try:
                    healthy = checks[name][0]()
                    detail = "healthy" if healthy else f"{checks[name][1]} not ok"
                except (httpx.HTTPError, KubernetesAPIError, OSError, subprocess.SubprocessError) as e:
                    detail = f"{checks[name][1]}: {type(e).__name__}: {e}"
            states.append(
                ComponentState(
                    name, proc.pid if proc else None, alive, healthy, detail, str(self.log_file(name))
                )
            )
        return states

    def memory_bytes(self) -> dict[str, int]:
        """Resident memory of each component's process tree, plus the containerd shims and pods."""
        out: dict[str, int] = {}
        counted: set[int] = set()
        for name in self._specs():
            proc = supervisor.read_pid_file(self._pid_file(name))
            if proc is None or not supervisor.is_alive(proc.pid, proc.start_ticks):
                continue
            tree = [p for p in supervisor.process_tree(proc.pid) if p not in counted]
            counted.update(tree)
            out[name] = supervisor.rss_bytes(tree)
        rest = [pid for pid, _ in host.our_processes(self.root, self._binaries()) if pid not in counted]
        shim_trees = {p for pid in rest for p in supervisor.process_tree(pid)} - counted
        out["shims and pods"] = supervisor.rss_bytes(sorted(shim_trees))
        return out

    def delete(self) -> list[str]:
        """Stop everything and remove its host state; returns leftovers (empty = clean)."""
        with self._lock():
            return self._teardown(graceful=True)

    def _teardown(self, *, graceful: bool, rotate_logs: bool = False) -> list[str]:
        """Stop every component, then clean the host. The logs stay where error messages point
        (``logs/``); only a new ``create`` moves them to ``logs.previous/``."""
        # reverse start order; the Rollouts controller first, or it would recreate the
        # ReplicaSets the drain deletes
        names = ["rollouts-controller", *[n for n in reversed(self._specs()) if n != "rollouts-controller"]]
        for name in names:
            if name == "kube-proxy" and graceful:
                self._drain_pods(timeout=30.0)
            if name == "containerd":
                self._kill_tasks()
            proc = supervisor.read_pid_file(self._pid_file(name))
            if proc is not None:
                stopping = [p for p in self._started if p.pid == proc.pid] or [proc]
                supervisor.stop(stopping[0], timeout=15.0)
        self._started.clear()
        previous = self.root / "logs.previous"
        if rotate_logs and self.logs.is_dir():
            shutil.rmtree(previous, ignore_errors=True)
            self.logs.replace(previous)
        left = host.clean(self.root, self._binaries(), keep=[self.logs, previous])
        if left:
            self.progress("left behind: " + "; ".join(left))
        return left

    def _drain_pods(self, timeout: float) -> None:
        """Delete every pod while kubelet runs, so it tears down their sandboxes with CNI DEL."""
        kubelet = supervisor.read_pid_file(self._pid_file("kubelet"))
        if kubelet is None or not supervisor.is_alive(kubelet.pid, kubelet.start_ticks):
            return
        try:
            with self.api(timeout=5.0) as api:
                namespaces = api.get("/api/v1/namespaces") or {}
                for ns in namespaces.get("items", []):
                    name = ns["metadata"]["name"]
                    for kind in (
                        "apis/apps/v1/namespaces/{}/deployments",
                        "apis/apps/v1/namespaces/{}/replicasets",
                        "apis/apps/v1/namespaces/{}/statefulsets",
                        "apis/apps/v1/namespaces/{}/daemonsets",
                        "apis/batch/v1/namespaces/{}/jobs",
                        "api/v1/namespaces/{}/pods",
                    ):
                        api.delete_collection("/" + kind.format(name))
        except (KubernetesAPIError, OSError) as e:
            self.progress(f"could not delete pods through the API ({e}); killing their containers instead")
            return
        try:
            supervisor.wait_for(
                "every container stopped", lambda: not self._tasks(), timeout=timeout, interval=0.5
            )
            time.sleep(1.0)  # kubelet runs CNI DEL right after the sandbox's task ends
        except WaitTimeout as e:
            self.progress(f"{e}; killing the rest")

    def _tasks(self) -> list[str]:
        if not self.socket.exists():
            return []
        out = subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", "k8s.io", "tasks", "ls", "-q"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return out.stdout.split()

    def _kill_tasks(self) -> None:
        ctr = ["ctr", "--address", str(self.socket), "-n", "k8s.io"]
        tasks = self._tasks()
        for t in tasks:
            subprocess.run(
                [*ctr, "tasks", "kill", "-s", "SIGKILL", t], capture_output=True, timeout=20, check=False
            )
        if tasks:
            time.sleep(0.5)
        for t in self._tasks():
            subprocess.run([*ctr, "tasks", "delete", "-f", t], capture_output=True, timeout=20, check=False)

    def leftovers(self) -> list[str]:
        return host.leftovers(self.root, self._binaries())
