"""The pipeline's components on the local target (issue 14): Kafka, MLflow, Feast, Airflow, Alertmanager.

Same contract as :mod:`clinops_lib._components` (``prepare`` / ``spec`` / ``healthy`` /
``after_start`` / ``version`` / ``endpoint``), plus ``needs``: the components that must be
*healthy* before this one's process starts (MLflow and Airflow keep their metadata in the local
PostgreSQL and create their database in ``prepare``; the feature server reads Redis). The local
target starts every component as soon as its needs allow and reports health in level order.

Versions: Kafka's and the events topic's come from the data-ingestion chart (the chart is the
one place for them); Spark's from the data-processing chart, through the pipeline venv's lock
(a unit test checks the two agree). The Python runtimes live in ``.venv-pipeline`` and
``.venv-airflow`` (see ``tools/*/requirements.in`` for why they are separate).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import uuid
from pathlib import Path

import httpx

from ._components import AWS_ENV, Component, _run_version, http_ok
from ._supervisor import ProcessSpec
from .config import Settings
from .exceptions import ComponentError, PrerequisiteError

__all__ = [
    "PIPELINE_COMPONENTS",
    "Airflow",
    "Alertmanager",
    "FeastServer",
    "Kafka",
    "KafkaConsumer",
    "MLflow",
    "kafka_settings",
    "pipeline_env",
]

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # health probes expect refusals while booting

KAFKA_CACHE = Path(os.environ.get("CLINOPS_CACHE_DIR", "/var/cache/clinops")) / "kafka"
DAG_ID = "clinops_pipeline"


def kafka_settings(settings: Settings) -> tuple[str, str]:
    """(Kafka version, events topic) as the data-ingestion chart declares them for the environment."""
    from .charts import subchart_values

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
    from .inventory import service_resources

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


def _create_database(settings: Settings, name: str, component: str, log_file: Path) -> None:
    import psycopg

    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=settings.ports.postgres,
            user="clinops",
            dbname="postgres",
            connect_timeout=5,
            autocommit=True,
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as e:  # noqa: BLE001 - any failure names the component and its log
        raise ComponentError(component, f"could not create database {name}: {e}", str(log_file)) from e


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
        return KAFKA_CACHE / self.version() / "libs"

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
        import asyncio

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
            return asyncio.run(asyncio.wait_for(probe(), 5))
        except Exception:  # noqa: BLE001 - any failure is "not healthy yet"
            return False

    def after_start(self) -> None:
        """Create the events topic (3 partitions, one replica: one broker) when missing."""
        import asyncio

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
            asyncio.run(asyncio.wait_for(create(), 30))
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
        from ._components import pg_dsn, python_bin, python_env

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
        import asyncio

        from aiokafka.admin import AIOKafkaAdminClient

        from .pipeline.kafka_consumer import GROUP_ID

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
            return asyncio.run(asyncio.wait_for(probe(), 5))
        except Exception:  # noqa: BLE001 - any failure is "not healthy yet"
            return False

    def endpoint(self) -> str:
        from .pipeline.kafka_consumer import EVENTS_TABLE, GROUP_ID

        return f"group {GROUP_ID} -> postgresql table {EVENTS_TABLE}"


# -- MLflow (Level 4) ------------------------------------------------------------------------------
class MLflow(Component):
    """Tracking server + model registry: PostgreSQL backend store, artifacts proxied to S3."""

    name = "mlflow"
    timeout = 120.0
    needs = ("postgresql",)  # the artifact bucket is used per request, not at start
    database = "mlflow"

    @property
    def port(self) -> int:
        return self.settings.ports.mlflow

    def prepare(self) -> None:
        super().prepare()
        _need_venv(self.settings, "pipeline", self.name)
        _create_database(self.settings, self.database, self.name, self.log_file)

    def spec(self) -> ProcessSpec:
        from .inventory import service_resources

        bucket = service_resources(self.settings.environment)["CLINOPS_BUCKET_MLFLOW_ARTIFACTS"]
        python = _venv(self.settings, "pipeline") / "bin" / "python"
        argv = [
            str(python),
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
        env = {**AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": self.settings.localstack_url, "PYTHONUNBUFFERED": "1"}
        return self._proc(argv, cwd=self.dir, env=env)

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint()}/health")

    def version(self) -> str:
        return _run_version(
            (
                str(_venv(self.settings, "pipeline") / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('mlflow'))",
            ),
            r"(\S+)",
        )


# -- Feast feature server (Level 3) ----------------------------------------------------------------
class FeastServer(Component):
    """``feast serve``: online features from the Redis online store over HTTP (model-serving's source)."""

    name = "feast"
    timeout = 180.0  # apply + serve import all of Feast: ~40 s on 2 cores with a load of 25
    needs = ("redis",)

    @property
    def port(self) -> int:
        return self.settings.ports.feast

    @property
    def repo(self) -> Path:
        return self.settings.state_dir / "pipeline" / "feast"

    def _python(self) -> Path:
        return _venv(self.settings, "pipeline") / "bin" / "python"

    def prepare(self) -> None:
        super().prepare()
        _need_venv(self.settings, "pipeline", self.name)

    def spec(self) -> ProcessSpec:
        """Apply the definitions (no data is read), then serve: the server starts on a complete
        registry, and the slow Feast imports of ``apply`` run in the child, not in ``up``."""
        import shlex

        feast = _venv(self.settings, "pipeline") / "bin" / "feast"
        apply = [str(self._python()), "-m", "clinops_lib.pipeline.feature_store", "apply"]
        serve = [
            str(feast),
            "--chdir",
            str(self.repo),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--registry_ttl_sec",
            "5",
            "--no-access-log",
        ]
        script = f"{shlex.join(apply)} && exec {shlex.join(serve)}"
        self.repo.mkdir(parents=True, exist_ok=True)
        return self._proc(
            ["/bin/sh", "-c", script], cwd=self.settings.project_root, env={**pipeline_env(self.settings)}
        )

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint()}/health")

    def version(self) -> str:
        return _run_version(
            (str(self._python()), "-c", "import importlib.metadata as m; print(m.version('feast'))"), r"(\S+)"
        )


# -- Airflow (Level 5) -----------------------------------------------------------------------------
class Airflow(Component):
    """Airflow's API server, scheduler and DAG processor on the local PostgreSQL (LocalExecutor).

    One supervised process tree: :mod:`clinops_lib.pipeline.airflow_launcher` migrates the
    database, starts the three and stops them together (``down`` signals the whole group). The
    DAG folder is the repository's ``clinops_lib/pipeline/dags``.
    """

    name = "airflow"
    timeout = 300.0  # a cold start migrates the metadata database (~100 s on 2 cores with a load of 25)
    needs = ("postgresql",)
    database = "airflow"

    @property
    def port(self) -> int:
        return self.settings.ports.airflow

    def _bin(self) -> Path:
        return _venv(self.settings, "airflow") / "bin" / "airflow"

    def env(self) -> dict[str, str]:
        pg = self.settings.ports.postgres
        return {
            **pipeline_env(self.settings),
            "AIRFLOW_HOME": str(self.dir),
            # the launcher starts its processes as `airflow ...` found on PATH
            "PATH": f"{self._bin().parent}{os.pathsep}{os.environ.get('PATH', '')}",
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
            "CLINOPS_PIPELINE_PYTHON": str(_venv(self.settings, "pipeline") / "bin" / "python"),
            "CLINOPS_PROJECT_ROOT": str(self.settings.project_root),
        }

    def prepare(self) -> None:
        super().prepare()
        _need_venv(self.settings, "airflow", self.name)
        _need_venv(self.settings, "pipeline", self.name)
        _create_database(self.settings, self.database, self.name, self.log_file)

    def spec(self) -> ProcessSpec:
        python = _venv(self.settings, "airflow") / "bin" / "python"
        return self._proc(
            [str(python), "-m", "clinops_lib.pipeline.airflow_launcher"], cwd=self.dir, env=self.env()
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

    def version(self) -> str:
        return _run_version(
            (
                str(_venv(self.settings, "airflow") / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('apache-airflow'))",
            ),
            r"(\S+)",
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


PIPELINE_COMPONENTS: dict[str, type[Component]] = {
    "kafka": Kafka,
    "kafka-consumer": KafkaConsumer,
    "feast": FeastServer,
    "mlflow": MLflow,
    "airflow": Airflow,
    "alertmanager": Alertmanager,
}
