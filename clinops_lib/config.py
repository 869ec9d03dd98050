"""Settings as one explicit object; the environment is read here and nowhere else.

Every client in the library takes a :class:`Settings` (or values from it) so tests build
their own with :meth:`Settings.for_tests`-style constructors instead of patching the
environment. What the library's own processes need of the environment besides settings is read
here too: the environment a started component inherits (:func:`child_environment`) and the
artifact directory a runbook's kernel was given (:func:`run_artifact_dir`).
``tests/test_environment_reads.py`` fails when a module elsewhere reads the environment (its
allow-list names the few that must, and why: the services and the pipeline jobs run in their
own processes and read theirs in one place each). Secrets (the signing key) are referenced by
*path* only: a notebook never sees key material, only whether signing is configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import catalog
from .exceptions import ConfigError

__all__ = [
    "ARTIFACT_DIR_VARIABLE",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_PG_BIN",
    "HOST_SESSION_VARIABLES",
    "PortMap",
    "Settings",
    "child_environment",
    "project_root",
    "run_artifact_dir",
]

#: Set by the runner for the kernel: where ``runs.record`` writes this run's artifacts.
ARTIFACT_DIR_VARIABLE = "CLINOPS_ARTIFACT_DIR"
#: Where Debian's PostgreSQL 15 keeps its server binaries (``CLINOPS_PG_BIN`` overrides).
DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
#: Caches of slow downloads and builds, outside the checkout (``CLINOPS_CACHE_DIR`` overrides).
DEFAULT_CACHE_DIR = "/var/cache/clinops"


def project_root() -> Path:
    """The repository root: where ``charts/``, ``terraform/`` and ``runbooks/`` live."""
    env = os.environ.get("CLINOPS_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


#: Variables a host session sets for *itself* that change how a child program behaves. A Jupyter
#: kernel (ipykernel) exports ``MPLBACKEND=module://matplotlib_inline.backend_inline``: any child
#: Python that imports matplotlib (Feast does, through bigtree) then dies at import with "not a
#: valid value for backend", so the platform brought up from runbook 01's kernel lost its Feast
#: server while ``clinops up`` from a shell worked. The kernel's colour and pager variables would
#: put ANSI codes into component logs. Names ending in ``_`` are prefixes.
HOST_SESSION_VARIABLES: tuple[str, ...] = (
    "MPLBACKEND",
    "JPY_",
    "JUPYTER_",
    "IPYTHON",
    "PYDEVD_",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "FORCE_COLOR",
    "PAGER",
    "GIT_PAGER",
)


def _host_session_variable(name: str) -> bool:
    return any(name.startswith(v) if v.endswith("_") else name == v for v in HOST_SESSION_VARIABLES)


def child_environment(
    overrides: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a process the platform starts: ours, minus the host session's own
    variables (:data:`HOST_SESSION_VARIABLES`), plus ``overrides``.

    Why not ours verbatim: the same ``clinops up`` runs from a shell, from CI and from a runbook's
    Jupyter kernel, and a component must behave the same under all three. The ``CLINOPS_*``
    variables stay (they are how ``clinops down`` and the tests recognise a platform's processes).
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not _host_session_variable(k)}
    env.update(overrides or {})
    return env


def run_artifact_dir() -> Path | None:
    """The artifact directory the runner gave this kernel (``None`` when run interactively)."""
    value = os.environ.get(ARTIFACT_DIR_VARIABLE)
    return Path(value) if value else None


def _from_environment(name: str, default: str) -> str:
    """Default of a field that follows a variable also when Settings is built directly."""
    return os.environ.get(name) or default


@dataclass(frozen=True)
class PortMap:
    """Loopback ports of the local target, all derived from one base so parallel test
    sessions (or a developer next to CI) can pick a free block with one number."""

    base: int = 17000

    def __post_init__(self) -> None:
        if not (1024 <= self.base <= 65000):
            raise ConfigError(f"port base {self.base} must be between 1024 and 65000")

    @property
    def postgres(self) -> int:
        return self.base + 0

    @property
    def redis(self) -> int:
        return self.base + 1

    @property
    def localstack(self) -> int:
        return self.base + 2

    @property
    def prometheus(self) -> int:
        return self.base + 3

    @property
    def haproxy_stats(self) -> int:
        return self.base + 4

    @property
    def kafka(self) -> int:
        """Kafka's client listener (KRaft: the controller listens on the next port)."""
        return self.base + 5

    @property
    def kafka_controller(self) -> int:
        return self.base + 6

    @property
    def mlflow(self) -> int:
        return self.base + 7

    @property
    def feast(self) -> int:
        """Feast's feature server (online features over HTTP)."""
        return self.base + 8

    @property
    def alertmanager(self) -> int:
        return self.base + 9

    @property
    def airflow(self) -> int:
        """Airflow's API server (UI and REST API)."""
        return self.base + 40

    @property
    def kafka_connect(self) -> int:
        """Kafka Connect's REST API (Debezium change data capture, Level 1)."""
        return self.base + 41

    def service_frontend(self, index: int) -> int:
        """User-facing HAProxy frontend of the index-th service (10, 11, ...)."""
        return self.base + 10 + index

    def service_preview(self, index: int) -> int:
        """Preview frontend (green / canary only) of the index-th service (20, 21, ...)."""
        return self.base + 20 + index

    def service_backend(self, index: int, track: int) -> int:
        """Backend port of one track (0 = stable/blue, 1 = canary/green) of one service."""
        return self.base + 30 + index * 2 + track

    def all_ports(self, services: int) -> list[int]:
        """Every port the local target listens on with ``services`` services (for leak checks)."""
        return [self.postgres, self.redis, self.localstack, self.prometheus, self.haproxy_stats,
                self.kafka, self.kafka_controller, self.mlflow, self.feast, self.alertmanager,
                self.airflow, self.kafka_connect] + [
            p for i in range(services)
            for p in (self.service_frontend(i), self.service_preview(i),
                      self.service_backend(i, 0), self.service_backend(i, 1))
        ]


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with safe defaults.

    ``signing_key`` is the path to an Ed25519 private key (PEM) used to sign evidence;
    ``None`` means bundles are sealed unsigned and say so. ``verify_keys`` are the public keys
    (PEM files) evidence must be signed with: when any is configured, verification fails
    unsigned bundles and bundles signed by any other key. ``approvers_file`` is the registry
    of people who may sign approvals (committed in the repository).

    Of the machine: ``pg_bin`` holds PostgreSQL's ``postgres``/``initdb`` (``CLINOPS_PG_BIN``),
    ``cache_dir`` the caches of slow downloads (``CLINOPS_CACHE_DIR``; Kafka's jars under
    ``kafka/<version>/``, Kafka Connect's and Debezium's under ``kafka-connect/<kafka>-debezium-<version>/``),
    ``python_no_bytecode`` whether ``PYTHONDONTWRITEBYTECODE`` is set (the
    local target then gives its Python processes a bytecode cache under the state dir). These
    three follow the environment also when ``Settings`` is built directly (tests do).
    """

    target: str = "local"
    project_root: Path = field(default_factory=project_root)
    state_dir: Path = field(default_factory=lambda: project_root() / ".state")
    evidence_dir: Path = field(default_factory=lambda: Path.cwd() / "evidence")
    ports: PortMap = field(default_factory=PortMap)
    signing_key: Path | None = None
    verify_keys: tuple[Path, ...] = ()
    approvers_file: Path = field(default_factory=lambda: project_root() / "compliance" / "approvers.yaml")
    localstack_endpoint: str | None = None
    kubeconfig: Path | None = None
    kube_context: str | None = None
    kind_cluster: str = "clinops"
    environment: str = "dev"
    operator: str | None = None
    pg_bin: Path = field(default_factory=lambda: Path(_from_environment("CLINOPS_PG_BIN", DEFAULT_PG_BIN)))
    cache_dir: Path = field(
        default_factory=lambda: Path(_from_environment("CLINOPS_CACHE_DIR", DEFAULT_CACHE_DIR))
    )
    python_no_bytecode: bool = field(
        default_factory=lambda: bool(_from_environment("PYTHONDONTWRITEBYTECODE", ""))
    )
    #: a Prometheus the Kubernetes targets query directly instead of the chart's in-cluster one
    #: through the API server proxy (CLINOPS_PROMETHEUS_URL; the Debian cluster has none inside)
    prometheus_endpoint: str | None = None

    def __post_init__(self) -> None:
        catalog.target_implementation(self.target)  # registered targets only (ConfigError otherwise)
        catalog.check_environment(self.environment)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``CLINOPS_*`` variables; keyword overrides win (CLI flags)."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        if v := env.get("CLINOPS_TARGET"):
            kwargs["target"] = v
        if v := env.get("CLINOPS_STATE_DIR"):
            kwargs["state_dir"] = Path(v).expanduser().resolve()
        if v := env.get("CLINOPS_EVIDENCE_DIR"):
            kwargs["evidence_dir"] = Path(v).expanduser().resolve()
        if v := env.get("CLINOPS_PORT_BASE"):
            try:
                kwargs["ports"] = PortMap(int(v))
            except ValueError as e:
                raise ConfigError(f"CLINOPS_PORT_BASE={v!r} is not a port number") from e
        if v := env.get("CLINOPS_SIGNING_KEY"):
            kwargs["signing_key"] = Path(v).expanduser().resolve()
        if v := env.get("CLINOPS_VERIFY_KEYS"):
            kwargs["verify_keys"] = tuple(Path(p).expanduser().resolve() for p in v.split(os.pathsep) if p)
        if v := env.get("CLINOPS_APPROVERS"):
            kwargs["approvers_file"] = Path(v).expanduser().resolve()
        if v := env.get("CLINOPS_LOCALSTACK_ENDPOINT"):
            kwargs["localstack_endpoint"] = v
        if v := env.get("KUBECONFIG"):
            kwargs["kubeconfig"] = Path(v.split(os.pathsep)[0]).expanduser()
        if v := env.get("CLINOPS_KUBE_CONTEXT"):
            kwargs["kube_context"] = v
        if v := env.get("CLINOPS_KIND_CLUSTER"):
            kwargs["kind_cluster"] = v
        if v := env.get("CLINOPS_ENVIRONMENT"):
            kwargs["environment"] = v
        if v := env.get("CLINOPS_PROMETHEUS_URL"):
            kwargs["prometheus_endpoint"] = v.rstrip("/")
        if v := env.get("CLINOPS_OPERATOR"):
            kwargs["operator"] = v
        if v := env.get("CLINOPS_PG_BIN"):
            kwargs["pg_bin"] = Path(v)
        if v := env.get("CLINOPS_CACHE_DIR"):
            kwargs["cache_dir"] = Path(v)
        if environ is not None:
            kwargs["python_no_bytecode"] = bool(env.get("PYTHONDONTWRITEBYTECODE"))
        kwargs.update({k: val for k, val in overrides.items() if val is not None})
        ports = kwargs.get("ports")
        if isinstance(ports, int):
            kwargs["ports"] = PortMap(ports)
        return cls(**kwargs)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (settings are immutable)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def localstack_url(self) -> str:
        return self.localstack_endpoint or f"http://127.0.0.1:{self.ports.localstack}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"
