"""The real components of the local target: how each is prepared, started and health-checked.

Each component is a small object with ``prepare`` (generate config, initdb: idempotent),
``spec`` (the :class:`~clinops_lib.targets.local.supervisor.ProcessSpec`), ``healthy`` (a real protocol
probe: SQL, Redis PING, HTTP), ``version`` and ``endpoint``. The local target strings them
together in level order; nothing here knows about levels or state files.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import httpx

from ...config import Settings
from ...exceptions import ComponentError, PrerequisiteError
from .haproxy import AdminSocket, HAProxyService, render_config
from .supervisor import ProcessSpec

__all__ = [
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

PG_BIN = Path(os.environ.get("CLINOPS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # the unprivileged system user postgres runs as when we are root
DB_USER = "clinops"
DB_NAME = "clinops"

#: Services in PortMap index order (index 0 -> frontend base+10, backends base+30/31, ...).
SERVICES: tuple[str, ...] = ("clinical-gateway", "model-serving")
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
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or _venv_has_bytecode(Path(python)):
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
        if not (PG_BIN / "postgres").exists():
            raise PrerequisiteError(
                f"postgresql: {PG_BIN}/postgres not found; install the Debian package "
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
            str(PG_BIN / "initdb"),
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
                    env={**os.environ, "LC_ALL": "C.UTF-8"},
                    **kwargs,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
                shutil.rmtree(self.data, ignore_errors=True)
                raise ComponentError(self.name, f"initdb failed: {e}", str(self.log_file)) from e

    def spec(self) -> ProcessSpec:
        argv = [
            str(PG_BIN / "postgres"),
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
        try:
            with self._connect() as conn:
                if (
                    conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
                    is None
                ):
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        except Exception as e:
            raise ComponentError(
                self.name, f"could not create database {DB_NAME}: {e}", str(self.log_file)
            ) from e

    def version(self) -> str:
        return _run_version((str(PG_BIN / "postgres"), "--version"), r"\(PostgreSQL\) (\S+)")

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
    name = "prometheus"
    timeout = 60.0

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
        cfg: dict[str, object] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": jobs,
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
        if not shutil.which("prometheus"):
            raise PrerequisiteError(
                "prometheus: binary 'prometheus' not found; install the Debian package prometheus"
            )
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def spec(self) -> ProcessSpec:
        return self._proc(
            [
                "prometheus",
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
        return _run_version(("prometheus", "--version"), r"version (\S+)")


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
