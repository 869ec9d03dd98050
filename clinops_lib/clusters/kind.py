"""kind provisioning: create/delete the named cluster and install the pinned stack.

Why checks first: ``kind create cluster`` on a machine without a Docker daemon fails after
a long pull with an error about a socket. Here ``docker`` (the CLI), a daemon that answers
``docker info`` and ``kind`` are checked up front, and a missing one raises a
:class:`PrerequisiteError` that names it and points to ``--target local``, which needs no
Docker at all.

The stack (Istio, Argo Rollouts, Argo CD, External Secrets, kube-prometheus-stack) is
installed with the Helm SDK from the versions pinned in ``kind/stack-versions.yaml``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import Settings
from ..exceptions import ConfigError, PrerequisiteError, TargetError, WaitFailed, WaitTimeout
from ..targets.kube.client import KubeClients, api_call, load_clients

__all__ = [
    "LOCAL_HINT",
    "StackComponent",
    "check_prerequisites",
    "cluster_exists",
    "create_cluster",
    "delete_cluster",
    "install_stack",
    "kind_from_cli",
    "load_stack",
    "stack_components",
    "wait_nodes_ready",
]

LOCAL_HINT = ("Use the local target instead (`--target local`, the default), which runs the "
              "platform as local processes without Docker")
Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]


def _run(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)


def check_prerequisites(*, which: Callable[[str], str | None] = shutil.which, run: Runner = _run) -> None:
    """Raise :class:`PrerequisiteError` naming everything missing for a kind cluster."""
    missing: list[str] = []
    docker = which("docker")
    if not docker:
        missing.append("the `docker` CLI is not installed")
    else:
        try:
            info = run([docker, "info", "--format", "{{.ServerVersion}}"], 20.0)
            if info.returncode != 0:
                detail = (info.stderr or info.stdout).strip().splitlines()
                missing.append("the Docker daemon does not answer (`docker info` failed"
                               + (f": {detail[-1]}" if detail else "") + ")")
        except (OSError, subprocess.TimeoutExpired) as e:
            missing.append(f"the Docker daemon does not answer (`docker info`: {e})")
    if not which("kind"):
        missing.append("the `kind` binary is not installed (https://kind.sigs.k8s.io)")
    if missing:
        raise PrerequisiteError("cannot run a kind cluster: " + "; ".join(missing) + f". {LOCAL_HINT}")


def _config_path(settings: Settings) -> Path:
    path = settings.project_root / "kind" / "kind-config.yaml"
    if not path.is_file():
        raise ConfigError(f"kind config {path} is missing")
    return path


def cluster_exists(name: str, *, run: Runner = _run) -> bool:
    out = run(["kind", "get", "clusters"], 60.0)
    if out.returncode != 0:
        raise TargetError(f"`kind get clusters` failed: {out.stderr.strip()}")
    return name in out.stdout.split()


def create_cluster(settings: Settings, *, run: Runner = _run, timeout: float = 600.0) -> bool:
    """Create cluster ``settings.kind_cluster`` (idempotent); True when it was created now."""
    check_prerequisites(run=run)
    name = settings.kind_cluster
    if cluster_exists(name, run=run):
        return False
    cmd = ["kind", "create", "cluster", "--name", name, "--config", str(_config_path(settings)),
           "--wait", f"{int(timeout)}s"]
    image = load_stack(settings).get("kindNodeImage")
    if image:
        cmd += ["--image", str(image)]
    if settings.kubeconfig:
        cmd += ["--kubeconfig", str(settings.kubeconfig)]
    out = run(cmd, timeout + 60)
    if out.returncode != 0:
        raise TargetError(f"`kind create cluster --name {name}` failed: {out.stderr.strip()[-2000:]}")
    return True


def delete_cluster(settings: Settings, *, run: Runner = _run) -> None:
    check_prerequisites(run=run)
    cmd = ["kind", "delete", "cluster", "--name", settings.kind_cluster]
    if settings.kubeconfig:
        cmd += ["--kubeconfig", str(settings.kubeconfig)]
    out = run(cmd, 300.0)
    if out.returncode != 0:
        raise TargetError(
            f"`kind delete cluster --name {settings.kind_cluster}` failed: {out.stderr.strip()}")


def wait_nodes_ready(clients: KubeClients, *, expected: int = 3, timeout: float = 300.0,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Wait until ``expected`` nodes report condition Ready=True; names them when not."""
    deadline = clock() + timeout
    while True:
        with api_call("list", "Node"):
            nodes = clients.core.list_node(_request_timeout=clients.request_timeout).items
        ready, not_ready = [], []
        for n in nodes:
            conds = {c.type: c for c in (n.status.conditions or [])}
            ready_c = conds.get("Ready")
            if ready_c is not None and ready_c.status == "True":
                ready.append(n.metadata.name)
            else:
                not_ready.append(f"{n.metadata.name} ({ready_c.reason if ready_c else 'no Ready condition'})")
            for bad in ("MemoryPressure", "DiskPressure", "PIDPressure"):
                if bad in conds and conds[bad].status == "True":
                    raise WaitFailed(f"node {n.metadata.name} reports {bad}: {conds[bad].message}")
        if len(ready) >= expected:
            return ready
        if clock() >= deadline:
            raise WaitTimeout(f"waited {timeout:g}s for {expected} Ready nodes; ready: {ready or 'none'}; "
                              f"not ready: {not_ready or 'none'}")
        sleep(2.0)


@dataclass(frozen=True)
class StackComponent:
    """One pinned chart of the cluster stack."""

    name: str
    chart: str
    repo: str
    version: str
    namespace: str
    values: dict[str, Any] = field(default_factory=dict)
    wait: bool = False


def load_stack(settings: Settings) -> dict[str, Any]:
    path = settings.project_root / "kind" / "stack-versions.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"stack versions {path} cannot be read: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"stack versions {path} is not a mapping")
    return data


def stack_components(settings: Settings) -> list[StackComponent]:
    out = []
    for i, c in enumerate(load_stack(settings).get("components") or []):
        try:
            out.append(StackComponent(
                name=c["name"], chart=c["chart"], repo=c["repo"], version=str(c["version"]),
                namespace=c["namespace"], values=c.get("values") or {}, wait=bool(c.get("wait"))))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"kind/stack-versions.yaml component {i} is missing {e}") from e
    return out


def install_stack(settings: Settings, *, helm_config: Any = None, timeout: int = 900,
                  progress: Callable[[str], None] | None = None) -> list[str]:
    """Install (or upgrade) every pinned component with the Helm SDK; returns release names."""
    import helm_python as helm

    components = stack_components(settings)
    cfg = helm_config
    if cfg is None:
        clients = load_clients(settings, context=settings.kube_context or f"kind-{settings.kind_cluster}")
        cfg = helm.Config(kubeconfig_path=str(clients.kubeconfig), kube_context=clients.context)
    done = []
    for c in components:
        if progress:
            progress(f"{c.name} {c.version} -> {c.namespace}")
        kwargs: dict[str, Any] = dict(namespace=c.namespace, chart_repo_url=c.repo, chart_version=c.version,
                                      timeout=timeout, wait="watcher" if c.wait else None)
        try:
            try:
                cfg.status(c.name)
                cfg.upgrade(c.chart, c.name, c.values, **kwargs)
            except helm.HelmNotFoundError:
                cfg.install(c.chart, c.name, c.values, create_namespace=True, **kwargs)
        except helm.HelmError as e:
            raise TargetError(f"installing {c.name} {c.version} (chart {c.chart} from {c.repo}) "
                              f"into {c.namespace} failed: {e}") from e
        done.append(c.name)
    _start_localstack(settings)
    return done


def _start_localstack(settings: Settings, run: Runner = _run) -> None:
    """LocalStack from localstack/docker-compose.yml on the kind docker network."""
    compose = settings.project_root / "localstack" / "docker-compose.yml"
    out = run(["docker", "compose", "-f", str(compose), "up", "-d", "--wait"], 300.0)
    if out.returncode != 0:
        raise TargetError(f"LocalStack (docker compose -f {compose} up) failed: {out.stderr.strip()[-1000:]}")


def kind_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops kind create|delete|install-stack``."""
    action = args.action
    if action == "create":
        created = create_cluster(settings)
        ctx = f"kind-{settings.kind_cluster}"
        clients = load_clients(settings, context=ctx)
        nodes = wait_nodes_ready(clients)
        verb = "created" if created else "already exists"
        print(f"kind cluster {settings.kind_cluster} {verb}; Ready nodes: {', '.join(nodes)} (context {ctx})")
        return 0
    if action == "delete":
        delete_cluster(settings)
        print(f"kind cluster {settings.kind_cluster} deleted")
        return 0
    if action == "install-stack":
        check_prerequisites()
        names = install_stack(settings, progress=lambda m: print(f"installing {m}", flush=True))
        print(f"stack installed: {', '.join(names)}; LocalStack on the kind network")
        return 0
    raise ConfigError(f"unknown kind action {action!r}; known: create, delete, install-stack")
