"""The real components of the local target: how each is prepared, started and health-checked.

Each component is a small object with ``prepare`` (generate config, initdb: idempotent),
``spec`` (the :class:`~clinops_lib.targets.local.supervisor.ProcessSpec`), ``healthy`` (a real protocol
probe: SQL, Redis PING, HTTP), ``version`` and ``endpoint``. The local target strings them
together in level order; nothing here knows about levels or state files.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TypeVar

import httpx

from ... import catalog
from ...config import Settings, child_environment
from ...exceptions import ComponentError, PrerequisiteError
from .haproxy import AdminSocket, HAProxyService, render_config
from .supervisor import ProcessSpec

log = logging.getLogger(__name__)

__all__ = [
    "DAG_ID",
    "PIPELINE_COMPONENTS",
    "Airflow",
    "AlertWatch",
    "Alertmanager",
    "FeastServer",
    "VenvProcess",
    "Kafka",
    "KafkaConsumer",
    "MLflow",
    "kafka_settings",
    "run_coroutine",
    "pipeline_env",
    "AWS_ENV",
    "SERVICES",
    "Component",
    "HAProxy",
    "LocalStack",
    "PostgreSQL",
    "Prometheus",
    "Redis",
    "Services",
    "http_ok",
    "pg_dsn",
    "python_bin",
    "python_env",
    "rules_file",
    "service_env",
    "service_spec",
]


_T = TypeVar("_T")


def run_coroutine(make: Callable[[], Awaitable[_T]], timeout_s: float) -> _T:
    """Run ``make()`` to completion on a private thread with its own event loop.

    The platform is brought up from plain scripts *and* from runbook cells, and a Jupyter kernel
    runs cells inside an event loop, where ``asyncio.run`` raises. A probe that called it directly
    was "not healthy" forever inside every runbook while passing every test run from pytest; one
    private thread makes both callers behave the same. Raises ``TimeoutError`` after ``timeout_s``.
    """

    async def bounded() -> _T:
        return await asyncio.wait_for(make(), timeout_s)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinops-async") as pool:
        return pool.submit(asyncio.run, bounded()).result()


PG_USER = "postgres"  # the unprivileged system user postgres runs as when we are root
DB_USER = "clinops"
DB_NAME = "clinops"

#: Services in PortMap index order (index 0 -> frontend base+10, backends base+30/31, ...), from the catalog.
SERVICES: tuple[str, ...] = catalog.service_names()
SERVICE_APPS: dict[str, str] = {
    "clinical-gateway": "clinops_lib.services.gateway:app",
    "model-serving": "clinops_lib.services.serving:app",
}
AWS_ENV: dict[str, str] = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",  # LocalStack's fixed dummy credentials, not a secret
}


@dataclass
class Services:
    """What the workloads need from Level 0 (names come from the AWS inventory)."""

    model_bucket: str = "clinops-dev-model-artifacts"
    model_key: str = "models/risk-model/current/model.joblib"
    events_topic_arn: str = "arn:aws:sns:us-east-1:000000000000:clinops-dev-observations"
    kafka_topic: str = "clinical-observations"
    registered_model: str = "clinops-subject-risk"
    model_alias: str = "champion"
    apps: dict[str, str] = field(default_factory=lambda: dict(SERVICE_APPS))
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_inventory(cls, settings: Settings) -> Services:
        """Bucket, key, topic and queue URLs as the inventory names them (a file read, no network)."""
        from ...inventory import service_resources

        res = service_resources(settings.environment, endpoint=settings.localstack_url)
        return cls(
            model_bucket=res["CLINOPS_MODEL_BUCKET"],
            model_key=res["CLINOPS_MODEL_KEY"],
            events_topic_arn=res["CLINOPS_EVENTS_TOPIC_ARN"],
            extra_env=dict(res),
        )


def python_bin(settings: Settings) -> str:
    """The project venv's python (services import clinops_lib from there)."""
    venv = settings.project_root / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def python_env(settings: Settings, python: str | Path) -> dict[str, str]:
    """Environment for a Python child (LocalStack, services, training): where its bytecode lives.

    Why: when ``PYTHONDONTWRITEBYTECODE`` is set (it is on the shared machine and in CI) and the
    venv was installed without compiled bytecode, no ``.pyc`` is ever written, so every start
    recompiles LocalStack, FastAPI, numpy... from source: LocalStack's boot alone goes from
    2.3 s to 0.8 s with a cache. The cache then lives under the state dir
    (``PYTHONPYCACHEPREFIX``), never next to the sources in the checkout or the venvs, so the
    intent of that variable (no bytecode litter) is kept, a warm start reuses it and
    ``down --purge`` removes it. Python validates each cached file against its source's mtime
    and size, so an edited module is recompiled, never run stale. When the venv of ``python``
    already holds compiled bytecode (``uv sync --compile-bytecode``), or the variable is not set,
    Python's own ``__pycache__`` behaviour is left alone.
    """
    if not settings.python_no_bytecode or _venv_has_bytecode(Path(python)):
        return {}
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(settings.state_dir / "pycache")}


@cache
def _venv_has_bytecode(python: Path) -> bool:
    """Whether the venv of ``python`` was installed with compiled bytecode: nearly every
    top-level package there has its ``__init__`` compiled (a few stray ``.pyc`` do not count)."""
    packages = list(python.parent.parent.glob("lib/python3*/site-packages/*/__init__.py"))
    if not packages:
        return False
    compiled = sum(1 for init in packages if any(init.parent.glob("__pycache__/__init__.cpython-*.pyc")))
    return compiled >= 0.9 * len(packages)


def pg_dsn(settings: Settings) -> str:
    """Loopback, trust auth: the DSN carries no password, so it is safe in logs and evidence."""
    return f"postgresql://{DB_USER}@127.0.0.1:{settings.ports.postgres}/{DB_NAME}"


def rules_file(settings: Settings) -> Path | None:
    """The shared Prometheus rule file (from clinops_lib.charts when it exists), or None when missing."""
    from ...charts import prometheus_rules_file
    from ...exceptions import ChartError

    try:
        return prometheus_rules_file(settings.project_root)
    except ChartError:
        return None


@cache
def _run_version(argv: tuple[str, ...], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(pattern, out)
    return m.group(1) if m else ""


class Component:
    """Base: one supervised process of the local target."""

    name = ""
    timeout = 30.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.state_dir / self.name
        self.log_file = settings.state_dir / "logs" / f"{self.name}.log"
        self.pid_file = settings.state_dir / "run" / f"{self.name}.pid"

    @property
    def port(self) -> int:
        raise NotImplementedError

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def spec(self) -> ProcessSpec:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def after_start(self) -> None:
        """Runs once the component is healthy (create the database, ...)."""

    def version(self) -> str:
        return ""

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _proc(self, argv: list[str], **kw: object) -> ProcessSpec:
        return ProcessSpec(self.name, argv, self.log_file, self.pid_file, ports=[self.port], **kw)  # type: ignore[arg-type]


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200 within ``timeout``; any transport error counts as not ready."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# -- PostgreSQL ----------------------------------------------------------------------------------
class PostgreSQL(Component):
    name = "postgresql"
    timeout = 60.0

    @property
    def port(self) -> int:
        return self.settings.ports.postgres

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.dir / "sock"

    def _user(self) -> str | None:
        return PG_USER if os.geteuid() == 0 else None

    def _check_reachable(self) -> None:
        """As root, postgres runs as an unprivileged user that must traverse every parent dir."""
        user = self._user()
        if user is None:
            return
        for parent in self.dir.resolve().parents:
            st = parent.stat()
            if st.st_mode & 0o001 == 0 and st.st_uid != pwd.getpwnam(user).pw_uid:
                raise PrerequisiteError(
                    f"postgresql runs as user {user!r} (it refuses root) but cannot enter {parent} "
                    f"(mode {oct(st.st_mode & 0o777)}); use a state dir whose parents are world-executable "
                    "(CLINOPS_STATE_DIR) or chmod o+x that directory"
                )

    def prepare(self) -> None:
        if not (self.settings.pg_bin / "postgres").exists():
            raise PrerequisiteError(
                f"postgresql: {self.settings.pg_bin}/postgres not found; install the Debian package "
                "postgresql (15) or set CLINOPS_PG_BIN"
            )
        self._check_reachable()
        for d in (self.dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        user = self._user()
        if user is not None:
            pw = pwd.getpwnam(user)
            for d in (self.dir, self.socket_dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        if (self.data / "PG_VERSION").exists():
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self.settings.pg_bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            DB_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
            "--no-sync",
        ]
        kwargs: dict[str, object] = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        with open(self.log_file, "ab") as log:
            try:
                subprocess.run(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    check=True,  # type: ignore[call-overload]
                    timeout=180,
                    env=child_environment({"LC_ALL": "C.UTF-8"}),
                    **kwargs,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
                shutil.rmtree(self.data, ignore_errors=True)
                raise ComponentError(self.name, f"initdb failed: {e}", str(self.log_file)) from e

    def spec(self) -> ProcessSpec:
        argv = [
            str(self.settings.pg_bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            str(self.socket_dir),
            "-c",
            "shared_buffers=32MB",
            "-c",
            "max_connections=60",
            "-c",
            "logging_collector=off",
            # logical decoding for Debezium (Level 1's debezium-cdc); the slot it keeps holds WAL
            # only while Connect is down, at most max_slot_wal_keep_size (then the slot is lost
            # and Connect's next start says so, instead of the disk filling up)
            "-c",
            "wal_level=logical",
            "-c",
            "max_slot_wal_keep_size=256MB",
        ]
        # SIGINT = "fast" shutdown of the postmaster alone; it stops its backends itself.
        return self._proc(
            argv,
            cwd=self.dir,
            user=self._user(),
            stop_signal=signal.SIGINT,
            signal_group=False,
            env={"LC_ALL": "C.UTF-8"},
        )

    def _connect(self, dbname: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=DB_USER, dbname=dbname, connect_timeout=2, autocommit=True
        )

    def healthy(self) -> bool:
        try:
            with self._connect() as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except Exception:  # noqa: BLE001 - any failure is "not healthy"
            return False

    def after_start(self) -> None:
        _create_database(self.settings, DB_NAME, self.name, self.log_file)

    def version(self) -> str:
        return _run_version((str(self.settings.pg_bin / "postgres"), "--version"), r"\(PostgreSQL\) (\S+)")

    def endpoint(self) -> str:
        return pg_dsn(self.settings)


# -- Redis -----------------------------------------------------------------------------------------
class Redis(Component):
    name = "redis"
    timeout = 20.0

    @property
    def port(self) -> int:
        return self.settings.ports.redis

    def prepare(self) -> None:
        super().prepare()
        if not shutil.which("redis-server"):
            raise PrerequisiteError(
                "redis: binary 'redis-server' not found; install the Debian package redis-server"
            )
        (self.dir / "redis.conf").write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    f"dir {self.dir}",
                    'logfile ""',
                    "appendonly yes",
                    'save ""',
                    "maxmemory 128mb",
                    "maxmemory-policy allkeys-lru",
                    "",
                ]
            )
        )

    def spec(self) -> ProcessSpec:
        return self._proc(["redis-server", str(self.dir / "redis.conf")], cwd=self.dir)

    def healthy(self) -> bool:
        import redis

        try:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def version(self) -> str:
        return _run_version(("redis-server", "--version"), r"v=(\S+)")

    def endpoint(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


# LocalStack 4.12's KMS calls uuid.uuid5(namespace, <bytes>), which only Python >= 3.12
# accepts; on 3.11 every CreateKey (and so every S3 PUT into an SSE-KMS bucket) fails with
# "encoding without a string argument". The launcher gives uuid5 the 3.12 behaviour, binds the
# gateway to the GATEWAY_LISTEN host, then runs LocalStack's normal entry point.
_LOCALSTACK_LAUNCHER = """
import hashlib, runpy, sys, uuid
if sys.version_info < (3, 12):
    _uuid5 = uuid.uuid5
    def uuid5(namespace, name):
        if isinstance(name, bytes):
            return uuid.UUID(bytes=hashlib.sha1(namespace.bytes + name).digest()[:16], version=5)
        return _uuid5(namespace, name)
    uuid.uuid5 = uuid5
# LocalStack's twisted gateway ignores the host of GATEWAY_LISTEN ("TODO: interface = host?")
# and binds 0.0.0.0; the local target promises loopback only, so bind the listen host.
import os, warnings
warnings.filterwarnings("ignore", message=".*service_identity.*")
from twisted.internet import endpoints
_TCP4 = endpoints.TCP4ServerEndpoint
_HOST = os.environ.get("GATEWAY_LISTEN", "127.0.0.1").rsplit(":", 1)[0] or "127.0.0.1"
class _ListenHostEndpoint(_TCP4):
    def __init__(self, reactor, port, backlog=50, interface=""):
        super().__init__(reactor, port, backlog, interface or _HOST)
endpoints.TCP4ServerEndpoint = _ListenHostEndpoint
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
"""


# -- LocalStack ------------------------------------------------------------------------------------
class LocalStack(Component):
    name = "localstack"
    timeout = 120.0
    services = ("s3", "sqs", "sns", "secretsmanager", "kms")  # kms: S3 SSE-KMS needs it

    @property
    def port(self) -> int:
        return self.settings.ports.localstack

    @property
    def python(self) -> Path:
        return self.settings.project_root / ".venv-localstack" / "bin" / "python"

    def prepare(self) -> None:
        super().prepare()
        if not self.python.exists():
            raise PrerequisiteError(
                f"localstack: {self.python} not found; run scripts/setup.sh "
                "(it installs LocalStack 4.12.0 into .venv-localstack)"
            )

    def spec(self) -> ProcessSpec:
        env = {
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "SERVICES": ",".join(self.services),
            "LOCALSTACK_VOLUME_DIR": str(self.dir),
            "PERSISTENCE": "1",
            "DNS_ADDRESS": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            "LS_LOG": "warn",
            **python_env(self.settings, self.python),
        }
        return self._proc([str(self.python), "-c", _LOCALSTACK_LAUNCHER], cwd=self.dir, env=env)

    def healthy(self) -> bool:
        try:
            r = httpx.get(f"{self.endpoint()}/_localstack/health", timeout=2)
            if r.status_code != 200:
                return False
            state = r.json().get("services", {})
        except (httpx.HTTPError, ValueError):
            return False
        return all(state.get(s) in ("available", "running") for s in self.services)

    def version(self) -> str:
        try:
            return str(
                httpx.get(f"{self.endpoint()}/_localstack/health", timeout=2).json().get("version", "")
            )
        except (httpx.HTTPError, ValueError):
            return ""


# -- Prometheus -----------------------------------------------------------------------------------
class Prometheus(Component):
    """The platform's Prometheus: Debian's ``prometheus`` on PATH by default.

    ``binary`` runs another build instead (the one from the Prometheus Go module, which has
    ``kubernetes_sd_configs``: ``clinops_lib.clusters.debian.build.build_prometheus``), and
    ``extra_scrape_configs`` are appended to the generated jobs (the Debian cluster's pod job,
    ``clinops_lib.clusters.debian.metrics.pod_scrape_job``).
    """

    name = "prometheus"
    timeout = 60.0

    def __init__(
        self,
        settings: Settings,
        *,
        binary: Path | None = None,
        extra_scrape_configs: Sequence[Mapping[str, object]] = (),
    ) -> None:
        super().__init__(settings)
        self.binary = binary
        self.extra_scrape_configs = [dict(job) for job in extra_scrape_configs]

    @property
    def executable(self) -> str:
        return str(self.binary) if self.binary is not None else "prometheus"

    @property
    def port(self) -> int:
        return self.settings.ports.prometheus

    def config(self) -> dict[str, object]:
        ports = self.settings.ports
        jobs: list[dict[str, object]] = []
        for i, svc in enumerate(SERVICES):
            jobs.append(
                {
                    "job_name": svc,
                    "honor_labels": True,  # the service's own `service`/`version` labels win
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{ports.service_backend(i, t)}"],
                            "labels": {"service": svc, "track": track},
                        }
                        for t, track in enumerate(("stable", "canary"))
                    ],
                }
            )
        jobs.append(
            {"job_name": "haproxy", "static_configs": [{"targets": [f"127.0.0.1:{ports.haproxy_stats}"]}]}
        )
        jobs.append({"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}]})
        jobs.extend(self.extra_scrape_configs)
        cfg: dict[str, object] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": jobs,
            # the platform's alerts go to the local Alertmanager (Level 6); while it is not up,
            # Prometheus retries and keeps evaluating
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports.alertmanager}"]}]}]
            },
        }
        rules = rules_file(self.settings)
        if rules is not None:
            cfg["rule_files"] = [str(rules)]
        else:
            warnings.warn(
                "prometheus: rule file charts/clinical-mlops/charts/observability/rules/"
                "platform-rules.yaml is missing; starting without alert rules",
                stacklevel=2,
            )
        return cfg

    def prepare(self) -> None:
        import yaml

        super().prepare()
        if self.binary is not None:
            if not os.access(self.binary, os.X_OK):
                raise PrerequisiteError(f"prometheus: binary {self.binary} not found or not executable")
        elif not shutil.which("prometheus"):
            raise PrerequisiteError(
                "prometheus: binary 'prometheus' not found; install the Debian package prometheus"
            )
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def spec(self) -> ProcessSpec:
        return self._proc(
            [
                self.executable,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=7d",
                "--web.enable-lifecycle",
            ],
            cwd=self.dir,
        )

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint()}/-/ready")

    def rules_available(self) -> bool:
        return rules_file(self.settings) is not None

    def has_rules(self) -> bool:
        """Whether the config Prometheus runs with names a rule file."""
        cfg = self.dir / "prometheus.yml"
        return cfg.exists() and "rule_files" in cfg.read_text()

    def rule_groups(self) -> list[str]:
        """Names of the rule groups Prometheus has loaded (from its API)."""
        try:
            data = httpx.get(f"{self.endpoint()}/api/v1/rules", timeout=5).json()
        except (httpx.HTTPError, ValueError) as e:
            raise ComponentError(self.name, f"cannot read loaded rules: {e}", str(self.log_file)) from e
        return [g["name"] for g in data.get("data", {}).get("groups", [])]

    def reload(self) -> None:
        try:
            r = httpx.post(f"{self.endpoint()}/-/reload", timeout=10)
        except httpx.HTTPError as e:
            raise ComponentError(self.name, f"reload failed: {e}", str(self.log_file)) from e
        if r.status_code != 200:
            raise ComponentError(self.name, f"reload failed: HTTP {r.status_code} {r.text}",
                                 str(self.log_file))

    def version(self) -> str:
        return _run_version((self.executable, "--version"), r"version (\S+)")


# -- HAProxy ---------------------------------------------------------------------------------------
class HAProxy(Component):
    name = "haproxy"
    timeout = 20.0
    #: A DOWN track is probed every 250 ms (HAProxy's default here is 1 s): a service that just
    #: became ready gets traffic (and ``up``/``deploy`` return) up to 0.75 s sooner. The probes
    #: hit a closed loopback port or a /readyz, a negligible load.
    down_interval_ms = 250

    def __init__(self, settings: Settings, weights: Mapping[str, tuple[int, int]] | None = None) -> None:
        super().__init__(settings)
        self.weights = dict(weights or {})

    @property
    def port(self) -> int:
        return self.settings.ports.haproxy_stats

    @property
    def admin_path(self) -> Path:
        # UNIX socket paths are limited to 107 bytes; deep tmp dirs fall back to a short path
        path = self.dir / "admin.sock"
        if len(str(path)) > 100:
            path = Path("/tmp") / f"clinops-haproxy-{self.settings.ports.base}.sock"
        return path

    def admin(self) -> AdminSocket:
        return AdminSocket(self.admin_path)

    def services(self) -> list[HAProxyService]:
        p = self.settings.ports
        out = []
        for i, svc in enumerate(SERVICES):
            stable, canary = self.weights.get(svc, (100, 0))
            out.append(
                HAProxyService(
                    svc,
                    p.service_frontend(i),
                    p.service_preview(i),
                    p.service_backend(i, 0),
                    p.service_backend(i, 1),
                    stable,
                    canary,
                )
            )
        return out

    def ports(self) -> list[int]:
        p = self.settings.ports
        return [self.port] + [
            x for i in range(len(SERVICES)) for x in (p.service_frontend(i), p.service_preview(i))
        ]

    def prepare(self) -> None:
        super().prepare()
        if not shutil.which("haproxy"):
            raise PrerequisiteError("haproxy: binary 'haproxy' not found; install the Debian package haproxy")
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(
            render_config(
                self.services(),
                stats_port=self.port,
                admin_socket=self.admin_path,
                down_interval_ms=self.down_interval_ms,
            )
        )
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ComponentError(
                self.name,
                f"generated {cfg} does not validate: {check.stdout}{check.stderr}",
                str(self.log_file),
            )

    def spec(self) -> ProcessSpec:
        if self.admin_path.exists():
            self.admin_path.unlink()
        return ProcessSpec(
            self.name,
            ["haproxy", "-db", "-f", str(self.dir / "haproxy.cfg")],
            self.log_file,
            self.pid_file,
            ports=self.ports(),
            cwd=self.dir,
        )

    def healthy(self) -> bool:
        if not http_ok(f"{self.endpoint()}/stats"):
            return False
        try:
            return "Version" in self.admin().show_info()
        except Exception:  # noqa: BLE001
            return False

    def version(self) -> str:
        return _run_version(("haproxy", "-v"), r"version (\S+)")


# -- services --------------------------------------------------------------------------------------
def service_env(
    settings: Settings, services: Services, service: str, version: str, fault: str
) -> dict[str, str]:
    """The environment docs/CONTRACTS.md (Services) fixes for every workload process."""
    return {
        **services.extra_env,
        "CLINOPS_SERVICE_NAME": service,
        "CLINOPS_SERVICE_VERSION": version,
        "CLINOPS_FAULT": fault,
        "CLINOPS_PG_DSN": pg_dsn(settings),
        "CLINOPS_REDIS_URL": f"redis://127.0.0.1:{settings.ports.redis}/0",
        "AWS_ENDPOINT_URL": settings.localstack_url,
        **AWS_ENV,
        "CLINOPS_EVENTS_TOPIC_ARN": services.events_topic_arn,
        "CLINOPS_MODEL_BUCKET": services.model_bucket,
        "CLINOPS_MODEL_KEY": services.model_key,
        # issue 14: the gateway's Kafka events; model-serving's registry model and online features
        "CLINOPS_KAFKA_BOOTSTRAP": f"127.0.0.1:{settings.ports.kafka}",
        "CLINOPS_KAFKA_TOPIC": services.kafka_topic,
        "CLINOPS_MLFLOW_URL": f"http://127.0.0.1:{settings.ports.mlflow}",
        "CLINOPS_FEAST_URL": f"http://127.0.0.1:{settings.ports.feast}",
        "CLINOPS_REGISTERED_MODEL": services.registered_model,
        "CLINOPS_MODEL_ALIAS": services.model_alias,
        "PYTHONUNBUFFERED": "1",
    }


def service_spec(
    settings: Settings, services: Services, service: str, track: str, version: str, fault: str
) -> ProcessSpec:
    index = SERVICES.index(service)
    t = 0 if track == "stable" else 1
    port = settings.ports.service_backend(index, t)
    name = f"{service}-{track}"
    argv = [
        python_bin(settings),
        "-m",
        "uvicorn",
        services.apps[service],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    return ProcessSpec(
        name,
        argv,
        settings.state_dir / "logs" / f"{name}.log",
        settings.state_dir / "run" / f"{name}.pid",
        ports=[port],
        env={**service_env(settings, services, service, version, fault), **python_env(settings, argv[0])},
        cwd=settings.project_root,
    )


# == Issue 14: the pipeline's components ===========================================================
# The pipeline's components on the local target (issue 14): Kafka, MLflow, Feast, Airflow, Alertmanager.
#
# Same contract as the components above (``prepare`` / ``spec`` / ``healthy`` /
# ``after_start`` / ``version`` / ``endpoint``), plus ``needs``: the components that must be
# *healthy* before this one's process starts (MLflow and Airflow keep their metadata in the local
# PostgreSQL and create their database in ``prepare``; the feature server reads Redis). The local
# target starts every component as soon as its needs allow and reports health in level order.
#
# Versions: Kafka's and the events topic's come from the data-ingestion chart (the chart is the
# one place for them); Spark's from the data-processing chart, through the pipeline venv's lock
# (a unit test checks the two agree). The Python runtimes live in ``.venv-pipeline`` and
# ``.venv-airflow`` (see ``tools/*/requirements.in`` for why they are separate).

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # health probes expect refusals while booting

DAG_ID = "clinops_pipeline"


def kafka_settings(settings: Settings) -> tuple[str, str]:
    """(Kafka version, events topic) as the data-ingestion chart declares them for the environment."""
    from ...charts import subchart_values

    values = subchart_values("data-ingestion", settings.environment, settings.project_root)
    kafka = values.get("kafka") or {}
    version = str(kafka.get("version") or "")
    topic = str((values.get("gateway") or {}).get("eventsTopic") or "")
    if not topic:
        topics = kafka.get("topics") or [{}]
        topic = str(topics[0].get("name") or "clinical-observations")
    if not version:
        raise PrerequisiteError("kafka: the data-ingestion chart declares no kafka.version")
    return version, topic


def _venv(settings: Settings, name: str) -> Path:
    return settings.project_root / f".venv-{name}"


def _need_venv(settings: Settings, name: str, component: str) -> Path:
    python = _venv(settings, name) / "bin" / "python"
    if not python.exists():
        raise PrerequisiteError(
            f"{component}: {python} not found; run scripts/setup.sh "
            f"(it installs .venv-{name} from tools/{name}/requirements.lock)"
        )
    return python


def pipeline_env(settings: Settings) -> dict[str, str]:
    """The environment of every pipeline job (read by :class:`~.pipeline.config.PipelineConfig`)."""
    from ...inventory import service_resources

    ports = settings.ports
    res = service_resources(settings.environment, endpoint=settings.localstack_url)
    return {
        **AWS_ENV,
        "AWS_ENDPOINT_URL": settings.localstack_url,
        "CLINOPS_PG_PORT": str(ports.postgres),
        "CLINOPS_REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
        "CLINOPS_BUCKET_FEATURE_STORE": res.get("CLINOPS_BUCKET_FEATURE_STORE", ""),
        "CLINOPS_MLFLOW_URL": f"http://127.0.0.1:{ports.mlflow}",
        "CLINOPS_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports.kafka}",
        "CLINOPS_PIPELINE_DIR": str(settings.state_dir / "pipeline"),
        "SPARK_LOCAL_IP": "127.0.0.1",  # Spark's driver and block manager listen on loopback only
        "PYTHONPATH": str(settings.project_root),
        "PYTHONUNBUFFERED": "1",
    }


#: How long creating a database may wait for PostgreSQL to take a connection. A server that has
#: just answered its health check can still miss a 2-second connect on a machine busy building
#: Kubernetes (CI saw exactly that), so connection failures are retried until this deadline;
#: an SQL error (permissions, a bad name) is not, it would fail the same way again.
CREATE_DATABASE_DEADLINE_SECONDS = 60.0


def _create_database(
    settings: Settings,
    name: str,
    component: str,
    log_file: Path,
    *,
    deadline_seconds: float = CREATE_DATABASE_DEADLINE_SECONDS,
) -> None:
    import psycopg

    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=settings.ports.postgres,
                user=DB_USER,
                dbname="postgres",
                connect_timeout=10,
                autocommit=True,
            ) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{name}"')
            return
        except psycopg.OperationalError as e:
            if time.monotonic() < deadline:
                log.info("%s: PostgreSQL not taking connections yet (%s); retrying", component, e)
                time.sleep(1.0)
                continue
            raise ComponentError(
                component,
                f"could not create database {name}: PostgreSQL took no connection "
                f"within {deadline_seconds:.0f} s: {e}",
                str(log_file),
            ) from e
        except Exception as e:  # noqa: BLE001 - any failure names the component and its log
            raise ComponentError(component, f"could not create database {name}: {e}", str(log_file)) from e


class VenvProcess(Component):
    """A process run from one of the project's own virtual environments (``.venv-<venv>``).

    The shared part of MLflow, Feast and Airflow: the venvs must exist before anything starts
    (named in the error, with the command that installs them), an optional database of the local
    PostgreSQL is created on ``prepare``, and the version is the installed distribution's, read
    by that venv's own Python (the project's ``.venv`` does not hold these packages).
    """

    venv = "pipeline"
    #: further venvs the process needs (Airflow's tasks run in the pipeline venv)
    also_needs_venvs: tuple[str, ...] = ()
    #: the distribution whose version :meth:`version` reports
    distribution = ""
    #: a database of the local PostgreSQL this process owns ("" for none)
    database = ""

    def python(self, venv: str | None = None) -> Path:
        return _venv(self.settings, venv or self.venv) / "bin" / "python"

    def venv_bin(self, program: str) -> Path:
        return _venv(self.settings, self.venv) / "bin" / program

    def prepare(self) -> None:
        super().prepare()
        for venv in (self.venv, *self.also_needs_venvs):
            _need_venv(self.settings, venv, self.name)
        if self.database:
            _create_database(self.settings, self.database, self.name, self.log_file)

    def version(self) -> str:
        return _run_version(
            (
                str(self.python()),
                "-c",
                f"import importlib.metadata as m; print(m.version({self.distribution!r}))",
            ),
            r"(\S+)",
        )


# -- Kafka (Level 1) ---------------------------------------------------------------------------------
class Kafka(Component):
    """One broker in KRaft mode (broker + controller in one JVM), jars from the Maven cache."""

    name = "kafka"
    timeout = 120.0
    needs: tuple[str, ...] = ()

    @property
    def port(self) -> int:
        return self.settings.ports.kafka

    @property
    def controller_port(self) -> int:
        return self.settings.ports.kafka_controller

    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def libs(self) -> Path:
        return self.settings.cache_dir / "kafka" / self.version() / "libs"

    def version(self) -> str:
        return kafka_settings(self.settings)[0]

    @property
    def topic(self) -> str:
        return kafka_settings(self.settings)[1]

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise PrerequisiteError("kafka: 'java' not found; install Debian's openjdk-17-jre-headless")
        return java

    def prepare(self) -> None:
        super().prepare()
        self._java()
        if not (self.libs / f"kafka_2.13-{self.version()}.jar").exists():
            raise PrerequisiteError(
                f"kafka: broker jars for {self.version()} not in {self.libs}; run scripts/setup.sh "
                "(it resolves org.apache.kafka:kafka_2.13 from Maven Central into that cache)"
            )
        data = self.dir / "data"
        (self.dir / "server.properties").write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, stdout\n"
            "log4j.logger.kafka.server.KafkaServer=INFO\n"
            "log4j.logger.kafka.server.KafkaRaftServer=INFO\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        cluster = self.dir / "cluster.id"
        if not cluster.exists():  # one id for the life of the data dir (formatted by the first start)
            cluster.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "\n")

    def _jvm(self) -> list[str]:
        return [
            self._java(),
            "-Xms64m",
            "-Xmx320m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true",  # bind 127.0.0.1 itself, not the IPv4-mapped ::ffff:127.0.0.1
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.dir / 'logs'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def spec(self) -> ProcessSpec:
        """Format the KRaft storage on the first start, then run the broker, both in the child:
        the format step's JVM (seconds) overlaps the other components' boot, not blocking ``up``."""
        import shlex

        props = str(self.dir / "server.properties")
        cluster_id = (self.dir / "cluster.id").read_text().strip()
        fmt = shlex.join([*self._jvm(), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", props])
        run = shlex.join([*self._jvm(), "kafka.Kafka", props])
        formatted = shlex.quote(str(self.dir / "data" / "meta.properties"))
        script = f"test -f {formatted} || {fmt} || exit 3; exec {run}"
        return ProcessSpec(
            self.name,
            ["/bin/sh", "-c", script],
            self.log_file,
            self.pid_file,
            ports=self.ports(),
            cwd=self.dir,
        )

    def healthy(self) -> bool:
        """A metadata request answered by the broker (not just an open port)."""
        from aiokafka.admin import AIOKafkaAdminClient

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                await admin.start()
                await admin.list_topics()
                return True
            finally:
                await admin.close()

        try:
            return run_coroutine(probe, 5)
        except Exception:  # noqa: BLE001 - any failure is "not healthy yet"
            return False

    def after_start(self) -> None:
        """Create the events topic (3 partitions, one replica: one broker) when missing."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
            await admin.start()
            try:
                if self.topic not in await admin.list_topics():
                    await admin.create_topics([NewTopic(self.topic, num_partitions=3, replication_factor=1)])
            finally:
                await admin.close()

        try:
            run_coroutine(create, 30)
        except Exception as e:  # noqa: BLE001
            raise ComponentError(
                self.name, f"could not create topic {self.topic}: {e}", str(self.log_file)
            ) from e

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def endpoint(self) -> str:
        return f"kafka://{self.bootstrap}/{self.topic}"


class KafkaConsumer(Component):
    """The consumer group that persists the events (:mod:`clinops_lib.pipeline.kafka_consumer`)."""

    name = "kafka-consumer"
    timeout = 60.0
    needs = ("kafka", "postgresql")

    @property
    def port(self) -> int:
        return 0  # a client only: it listens on nothing

    def spec(self) -> ProcessSpec:
        _, topic = kafka_settings(self.settings)
        python = python_bin(self.settings)
        argv = [
            python,
            "-m",
            "clinops_lib.pipeline.kafka_consumer",
            "--bootstrap",
            f"127.0.0.1:{self.settings.ports.kafka}",
            "--topic",
            topic,
            "--pg-dsn",
            pg_dsn(self.settings),
        ]
        return ProcessSpec(
            self.name,
            argv,
            self.log_file,
            self.pid_file,
            ports=[],
            cwd=self.settings.project_root,
            env={"PYTHONUNBUFFERED": "1", **python_env(self.settings, python)},
        )

    def healthy(self) -> bool:
        """The broker reports the consumer group Stable with a member (it has joined and owns partitions)."""
        from aiokafka.admin import AIOKafkaAdminClient

        from ...pipeline.kafka_consumer import GROUP_ID

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=f"127.0.0.1:{self.settings.ports.kafka}", request_timeout_ms=3000
            )
            try:
                await admin.start()
                responses = await admin.describe_consumer_groups([GROUP_ID])
                # raw DescribeGroups responses: (error, group_id, state, protocol_type, protocol, members..)
                return any(
                    g[1] == GROUP_ID and g[2] == "Stable" and g[5] for r in responses for g in r.groups
                )
            finally:
                await admin.close()

        try:
            return run_coroutine(probe, 5)
        except Exception:  # noqa: BLE001 - any failure is "not healthy yet"
            return False

    def endpoint(self) -> str:
        from ...pipeline.kafka_consumer import EVENTS_TABLE, GROUP_ID

        return f"group {GROUP_ID} -> postgresql table {EVENTS_TABLE}"


# -- MLflow (Level 4) ------------------------------------------------------------------------------
class MLflow(VenvProcess):
    """Tracking server + model registry: PostgreSQL backend store, artifacts proxied to S3."""

    name = "mlflow"
    timeout = 120.0
    needs = ("postgresql",)  # the artifact bucket is used per request, not at start
    venv = "pipeline"
    distribution = "mlflow"
    database = "mlflow"

    @property
    def port(self) -> int:
        return self.settings.ports.mlflow

    def spec(self) -> ProcessSpec:
        from ...inventory import service_resources

        bucket = service_resources(self.settings.environment)["CLINOPS_BUCKET_MLFLOW_ARTIFACTS"]
        argv = [
            str(self.python()),
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"postgresql+psycopg2://clinops@127.0.0.1:{self.settings.ports.postgres}/{self.database}",
            "--artifacts-destination",
            f"s3://{bucket}/",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = {
            **AWS_ENV,
            "MLFLOW_S3_ENDPOINT_URL": self.settings.localstack_url,
            # MLflow 3's job runner (a huey consumer per job type: GenAI evaluation, trace rollups)
            # is ~2 GiB of extra processes; tracking and the registry, all this platform uses, need none
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1",
        }
        return self._proc(argv, cwd=self.dir, env=env)

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint()}/health")


# -- Feast feature server (Level 3) ----------------------------------------------------------------
class FeastServer(VenvProcess):
    """``feast serve``: online features from the Redis online store over HTTP (model-serving's source)."""

    name = "feast"
    timeout = 180.0  # apply + serve import all of Feast: ~40 s on 2 cores with a load of 25
    needs = ("redis",)
    venv = "pipeline"
    distribution = "feast"

    @property
    def port(self) -> int:
        return self.settings.ports.feast

    @property
    def repo(self) -> Path:
        return self.settings.state_dir / "pipeline" / "feast"

    def spec(self) -> ProcessSpec:
        """Apply the definitions (no data is read), then serve, in one child process
        (:func:`clinops_lib.pipeline.feature_store.serve`): the server starts on a complete
        registry, and Feast is imported once, in the child, not in ``up``."""
        argv = [
            str(self.python()),
            "-m",
            "clinops_lib.pipeline.feature_store",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.repo.mkdir(parents=True, exist_ok=True)
        # gunicorn (under `feast serve`) binds a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl, else
        # at one machine-wide $HOME/.gunicorn/gunicorn.ctl: two platforms' Feast servers (or a stale
        # socket) then collide. A runtime dir of this instance's own keeps it in the state dir.
        runtime = self.dir / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self._proc(
            argv,
            cwd=self.settings.project_root,
            env={**pipeline_env(self.settings), "XDG_RUNTIME_DIR": str(runtime)},
        )

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint()}/health")


# -- Airflow (Level 5) -----------------------------------------------------------------------------
class Airflow(VenvProcess):
    """Airflow's API server, scheduler and DAG processor on the local PostgreSQL (LocalExecutor).

    One supervised process tree: :mod:`clinops_lib.pipeline.airflow_launcher` migrates the
    database, starts the three and stops them together (``down`` signals the whole group). The
    DAG folder is the repository's ``clinops_lib/pipeline/dags``.
    """

    name = "airflow"
    timeout = 300.0  # a cold start migrates the metadata database (~100 s on 2 cores with a load of 25)
    needs = ("postgresql",)
    venv = "airflow"
    also_needs_venvs = ("pipeline",)  # the DAG's tasks run the pipeline jobs there
    distribution = "apache-airflow"
    database = "airflow"

    @property
    def port(self) -> int:
        return self.settings.ports.airflow

    def env(self) -> dict[str, str]:
        pg = self.settings.ports.postgres
        return {
            **pipeline_env(self.settings),
            "AIRFLOW_HOME": str(self.dir),
            # the launcher starts its processes as `airflow ...` found on PATH
            "PATH": f"{self.venv_bin('airflow').parent}{os.pathsep}{child_environment().get('PATH', '')}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(
                self.settings.project_root / "clinops_lib" / "pipeline" / "dags"
            ),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://clinops@127.0.0.1:{pg}/{self.database}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.endpoint(),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.endpoint()}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # a task's supervisor talks to the API server; on 2 shared cores 5 s (the default) is too short
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.dir / "task-logs"),
            "CLINOPS_PIPELINE_PYTHON": str(self.python("pipeline")),
            "CLINOPS_PROJECT_ROOT": str(self.settings.project_root),
        }

    def spec(self) -> ProcessSpec:
        return self._proc(
            [str(self.python()), "-m", "clinops_lib.pipeline.airflow_launcher"], cwd=self.dir, env=self.env()
        )

    def healthy(self) -> bool:
        """The API server answers and reports the metadatabase, scheduler and DAG processor healthy."""
        try:
            r = httpx.get(f"{self.endpoint()}/api/v2/monitor/health", timeout=3)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return False
        return r.status_code == 200 and all(
            (body.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )


# -- Alertmanager (Level 6) ------------------------------------------------------------------------
class Alertmanager(Component):
    """Debian's Alertmanager; Prometheus sends it the platform's alerts. The receiver is a
    record only (no e-mail or pager on a laptop): drills read ``/api/v2/alerts`` for evidence."""

    name = "alertmanager"
    timeout = 30.0
    needs: tuple[str, ...] = ()

    @property
    def port(self) -> int:
        return self.settings.ports.alertmanager

    def prepare(self) -> None:
        import yaml

        super().prepare()
        if not shutil.which("prometheus-alertmanager"):
            raise PrerequisiteError(
                "alertmanager: binary 'prometheus-alertmanager' not found; install the Debian package "
                "prometheus-alertmanager"
            )
        config = {
            "route": {
                "receiver": "record",
                "group_by": ["alertname", "service"],
                "group_wait": "0s",
                "group_interval": "5s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "record"}],
        }
        (self.dir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def spec(self) -> ProcessSpec:
        return self._proc(
            [
                "prometheus-alertmanager",
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            cwd=self.dir,
        )

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint()}/-/ready")

    def alerts(self) -> list[dict[str, object]]:
        """The alerts as Alertmanager holds them now (for evidence)."""
        try:
            r = httpx.get(f"{self.endpoint()}/api/v2/alerts", timeout=5)
            r.raise_for_status()
            return list(r.json())
        except (httpx.HTTPError, ValueError) as e:
            raise ComponentError(self.name, f"cannot read alerts: {e}", str(self.log_file)) from e

    def version(self) -> str:
        return _run_version(("prometheus-alertmanager", "--version"), r"version (\S+)")


class AlertWatch:
    """Every alert of one name that Alertmanager held while watched, polled every ``interval``.

    Why a watch and not one read at the end: Alertmanager's API lists *active* alerts only, and
    a drill's canary alert resolves a few seconds after an abort retires the canary (its series
    go stale in Prometheus). Polling while the drill runs keeps each alert as Alertmanager
    showed it (labels, annotations, ``startsAt``, ``status``, ``fingerprint``), plus when this
    watch first and last saw it (``seen_first``/``seen_last``, Unix seconds). Reads that fail
    (Alertmanager down or restarting) are counted in :attr:`failed_reads`, never raised: the
    watch must not break the drill it observes. Re-enterable: ``with watch:`` again resumes it.
    """

    def __init__(self, alertmanager: Alertmanager, alertname: str, interval: float = 0.25) -> None:
        self.alertmanager = alertmanager
        self.alertname = alertname
        self.interval = interval
        self.failed_reads = 0
        self.last_error = ""
        self._seen: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """One read of Alertmanager's alerts (also called by the thread)."""
        try:
            alerts = self.alertmanager.alerts()
        except ComponentError as e:
            self.failed_reads += 1
            self.last_error = str(e)
            return
        now = time.time()
        with self._lock:
            for alert in alerts:
                labels = alert.get("labels") or {}
                if not isinstance(labels, dict) or labels.get("alertname") != self.alertname:
                    continue
                key = str(alert.get("fingerprint") or sorted(labels.items()))
                first = self._seen.get(key, {}).get("seen_first", now)
                self._seen[key] = {**alert, "seen_first": first, "seen_last": now}

    def seen(self) -> list[dict[str, object]]:
        """The alerts seen so far, each as last seen, in the order first seen."""
        with self._lock:
            return sorted(self._seen.values(), key=lambda a: float(a["seen_first"]))  # type: ignore[arg-type]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def __enter__(self) -> AlertWatch:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"alert-watch-{self.alertname}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.poll()  # a last read: what Alertmanager holds when the watched work ended


PIPELINE_COMPONENTS: dict[str, type[Component]] = {
    "kafka": Kafka,
    "kafka-consumer": KafkaConsumer,
    "feast": FeastServer,
    "mlflow": MLflow,
    "airflow": Airflow,
    "alertmanager": Alertmanager,
}
