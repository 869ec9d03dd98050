"""Debezium change data capture on Kafka Connect: Level 1's ``debezium-cdc`` on the local target.

What runs: one Kafka Connect worker in **standalone** mode (``ConnectStandalone``: offsets in a
file of the state dir, no config/offset/status topics, one JVM) with one connector, Debezium's
PostgreSQL connector, streaming every committed change of the gateway's ``clinical_observations``
table from the local PostgreSQL's logical replication (``pgoutput``, publication and slot
``clinops_cdc``) to the topic ``clinops-cdc.public.clinical_observations`` of the local broker.
The jars are Maven Central's (``tools/kafka-connect/pom.xml``, resolved by ``scripts/setup.sh``
into ``<cache>/kafka-connect/<kafka>-debezium-<debezium>/``: ``libs/`` for the worker, Debezium
in ``plugins/`` so Connect loads it in its own class loader).

How it relates to the gateway's own producer. The gateway stores an observation, then hands an
``observation.received`` event to a bounded background publisher (the events topic; the consumer
group persists them to ``observation_events``). That event is a *notification*: it is dropped
(and counted) when the broker is down or the queue is full, and it knows nothing of rows written
by anything but the gateway. The CDC topic is the table's *changelog*: every committed insert,
update and delete, in commit order, read from the write-ahead log after the fact, so nothing the
database committed is missing from it, whoever wrote it, and a Connect restart resumes from the
last flushed log position (the slot keeps the WAL until then, at most PostgreSQL's
``max_slot_wal_keep_size``, 256 MB; a slot that lost its WAL is dropped on the next start and the
table snapshotted again, which the log says). The two are kept side by side:
the event path stays the low-latency one the platform's consumers use; the CDC topic is what an
audit reads to prove completeness (:mod:`clinops_lib.pipeline.cdc_audit`, ``LocalTarget.cdc_audit``,
shown by ``01-deploy-levels``: every stored row in the changelog, and which rows lack a gateway
event). No long-running consumer group reads it yet.

Why opt-in (``Component.opt_in`` in the catalog): a drill or a component test brings Level 1 up
for the gateway and must not wait for a second JVM to start, load Debezium and snapshot the
table; ``clinops up`` of every level, ``01-deploy-levels`` and ``--with debezium-cdc`` start it.

The replication role and the publication are created by :meth:`DebeziumConnect.prepare`,
idempotently, on a PostgreSQL that runs with ``wal_level=logical`` (the local target starts it so).
The role's password is generated once, kept in ``secrets.properties`` (mode 0600) of the
component's state dir, given to PostgreSQL as a SCRAM verifier (the password itself is never in
an SQL statement, so never in a server log) and to the connector through Connect's
``FileConfigProvider`` (the connector's config, REST answers and Connect's log show the
``${file:...}`` placeholder, never the value). The local PostgreSQL trusts loopback connections
(``initdb --auth=trust``), so the password is not checked here; against a real database it is.

Health: the Connect REST API reports the connector **and** its task ``RUNNING`` and PostgreSQL
shows the replication slot active (Debezium keeps its task RUNNING while it retries a lost
database connection, so RUNNING alone does not mean changes flow). Memory: one JVM
with ``-Xmx256m``, serial GC and the C1 compiler only, like the broker's and Spark's JVMs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from ...config import Settings
from ...exceptions import ComponentError, PrerequisiteError
from .components import Component, kafka_settings
from .supervisor import ProcessSpec

__all__ = [
    "CDC_PUBLICATION",
    "CDC_ROLE",
    "CDC_SLOT",
    "CDC_TOPIC_PREFIX",
    "CONNECTOR_NAME",
    "DebeziumConnect",
    "cdc_topic",
    "connect_versions",
    "scram_verifier",
]

CONNECTOR_NAME = "clinops-observations-cdc"
CDC_ROLE = "clinops_cdc"  # LOGIN REPLICATION, SELECT on the observations table only
CDC_PUBLICATION = "clinops_cdc"
CDC_SLOT = "clinops_cdc"
CDC_TOPIC_PREFIX = "clinops-cdc"
_POM = Path("tools") / "kafka-connect" / "pom.xml"
_CONNECT_PLUGIN = "debezium-connector-postgres"


@cache
def _pom_properties(project_root: Path) -> dict[str, str]:
    text = (project_root / _POM).read_text()
    return dict(re.findall(r"<([a-z.]+\.version)>([^<]+)</\1>", text))


def connect_versions(settings: Settings) -> tuple[str, str]:
    """(Kafka Connect version, Debezium version): Connect runs at the broker's version (the
    data-ingestion chart's ``kafka.version``), Debezium's is the pom's (the charts deploy none)."""
    kafka = kafka_settings(settings)[0]
    try:
        debezium = _pom_properties(settings.project_root).get("debezium.version", "")
    except OSError as e:
        raise PrerequisiteError(f"debezium-cdc: cannot read {_POM}: {e}") from e
    if not debezium:
        raise PrerequisiteError(f"debezium-cdc: {_POM} declares no debezium.version")
    return kafka, debezium


def cdc_topic() -> str:
    """The topic Debezium writes the observations table's changes to (``<prefix>.<schema>.<table>``)."""
    from ...services.gateway import OBSERVATIONS_TABLE

    return f"{CDC_TOPIC_PREFIX}.public.{OBSERVATIONS_TABLE}"


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677, as ``pg_authid`` stores it).

    ``ALTER ROLE ... PASSWORD '<verifier>'`` sets the password without the password ever being
    part of a statement: a statement that fails is written to PostgreSQL's log with its text.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class DebeziumConnect(Component):
    """Kafka Connect (standalone) running Debezium's PostgreSQL connector; see the module docstring."""

    name = "debezium-cdc"
    timeout = 240.0  # JVM start, plugin load, connector start and the table's first snapshot, on 2 busy cores
    needs = ("kafka", "postgresql")

    @property
    def port(self) -> int:
        return self.settings.ports.kafka_connect

    @property
    def home(self) -> Path:
        kafka, debezium = connect_versions(self.settings)
        return self.settings.cache_dir / "kafka-connect" / f"{kafka}-debezium-{debezium}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def plugins(self) -> Path:
        return self.home / "plugins"

    @property
    def secrets_file(self) -> Path:
        return self.dir / "secrets.properties"

    def version(self) -> str:
        kafka, debezium = connect_versions(self.settings)
        return f"connect {kafka}, debezium {debezium}"

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/connectors/{CONNECTOR_NAME}"

    # -- prepare ---------------------------------------------------------------------------------
    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise PrerequisiteError(
                f"{self.name}: 'java' not found; install Debian's openjdk-17-jre-headless")
        return java

    def _check_jars(self) -> None:
        kafka, debezium = connect_versions(self.settings)
        wanted = (
            self.libs / f"connect-runtime-{kafka}.jar",
            self.plugins / _CONNECT_PLUGIN / f"debezium-connector-postgres-{debezium}.jar",
        )
        for jar in wanted:
            if not jar.exists():
                raise PrerequisiteError(
                    f"{self.name}: {jar.name} not in {jar.parent}; run scripts/setup.sh (it resolves "
                    f"Kafka Connect {kafka} and Debezium {debezium} from Maven Central into {self.home})"
                )

    def _password(self) -> str:
        """The replication role's password: generated once, kept 0600 in the state dir."""
        if self.secrets_file.exists():
            for line in self.secrets_file.read_text().splitlines():
                if line.startswith("password="):
                    return line.removeprefix("password=")
        password = secrets.token_urlsafe(24)  # URL-safe: no escaping in a .properties file
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"password={password}\n")
        return password

    def _prepare_database(self) -> None:
        """wal_level=logical checked; the table, the replication role and the publication, idempotently."""
        import psycopg
        from psycopg import sql

        from ...services.gateway import OBSERVATIONS_SCHEMA, OBSERVATIONS_SCHEMA_LOCK, OBSERVATIONS_TABLE
        from .components import DB_NAME, DB_USER

        verifier = scram_verifier(self._password())
        try:
            with psycopg.connect(host="127.0.0.1", port=self.settings.ports.postgres, user=DB_USER,
                                 dbname=DB_NAME, connect_timeout=5, autocommit=True) as conn:
                wal_level = conn.execute("SHOW wal_level").fetchone()
                if wal_level is None or wal_level[0] != "logical":
                    raise PrerequisiteError(
                        f"{self.name}: the running PostgreSQL has wal_level={wal_level and wal_level[0]}, "
                        "logical decoding needs 'logical'; it was started by an older clinops: restart "
                        "it (`clinops down` then `clinops up`)"
                    )
                with conn.transaction():
                    # the gateway's own DDL under the gateway's lock: whoever comes first creates it
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (OBSERVATIONS_SCHEMA_LOCK,))
                    conn.execute(OBSERVATIONS_SCHEMA)
                    role = sql.Identifier(CDC_ROLE)
                    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (CDC_ROLE,))
                    if exists.fetchone() is None:
                        conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION").format(role))
                    conn.execute(sql.SQL("ALTER ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                        role, sql.Literal(verifier)))
                    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(DB_NAME), role))
                    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
                    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
                        sql.Identifier(OBSERVATIONS_TABLE), role))
                    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                                    (CDC_PUBLICATION,)).fetchone() is None:
                        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                            sql.Identifier(CDC_PUBLICATION), sql.Identifier(OBSERVATIONS_TABLE)))
                # Connect was down while more than max_slot_wal_keep_size of WAL was written: the
                # slot lost the WAL it held, so the stream cannot resume. Start over (slot and
                # offsets dropped: Debezium snapshots the table again) and say so in the log.
                lost = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND "
                                    "wal_status = 'lost' AND NOT active", (CDC_SLOT,)).fetchone()
                if lost is not None:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (CDC_SLOT,))
                    (self.dir / "offsets.dat").unlink(missing_ok=True)
                    self.log_file.parent.mkdir(parents=True, exist_ok=True)
                    with self.log_file.open("a") as log:
                        log.write(f"clinops: replication slot {CDC_SLOT} had lost its WAL (Connect down too "
                                  "long); dropped it and the offsets: the table is snapshotted again\n")
        except PrerequisiteError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure names the component and its log
            raise ComponentError(
                self.name, f"could not prepare the replication role and publication: {type(e).__name__}: {e}",
                str(self.log_file),
            ) from e

    def prepare(self) -> None:
        super().prepare()
        self._java()
        self._check_jars()
        self._prepare_database()
        kafka_port, pg_port = self.settings.ports.kafka, self.settings.ports.postgres
        (self.dir / "worker.properties").write_text("\n".join([
            f"bootstrap.servers=127.0.0.1:{kafka_port}",
            f"listeners=http://127.0.0.1:{self.port}",
            "rest.advertised.host.name=127.0.0.1",
            f"rest.advertised.port={self.port}",
            "key.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            # plain JSON change events (no embedded schema): readable by any consumer
            "key.converter.schemas.enable=false",
            "value.converter.schemas.enable=false",
            f"offset.storage.file.filename={self.dir / 'offsets.dat'}",
            "offset.flush.interval.ms=1000",
            f"plugin.path={self.plugins}",
            # Debezium and the JSON converter declare themselves in META-INF/services: loading by
            # ServiceLoader skips scanning every class of every jar (seconds of CPU per start)
            "plugin.discovery=service_load",
            "config.providers=file",
            "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider",
            "",
        ]))
        from ...services.gateway import OBSERVATIONS_TABLE
        from .components import DB_NAME

        (self.dir / "connector.properties").write_text("\n".join([
            f"name={CONNECTOR_NAME}",
            "connector.class=io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max=1",
            "plugin.name=pgoutput",
            "database.hostname=127.0.0.1",
            f"database.port={pg_port}",
            f"database.user={CDC_ROLE}",
            f"database.password=${{file:{self.secrets_file}:password}}",
            f"database.dbname={DB_NAME}",
            f"topic.prefix={CDC_TOPIC_PREFIX}",
            f"table.include.list=public.{OBSERVATIONS_TABLE}",
            f"publication.name={CDC_PUBLICATION}",
            "publication.autocreate.mode=disabled",  # created above, by the platform, for one table
            f"slot.name={CDC_SLOT}",
            "snapshot.mode=initial",  # rows stored before the first start, then the stream
            # the broker does not auto-create topics: Connect creates the CDC topic itself
            "topic.creation.default.replication.factor=1",
            "topic.creation.default.partitions=3",
            "",
        ]))
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, stdout\n"
            "log4j.logger.org.apache.kafka.connect.runtime.Connect=INFO\n"
            "log4j.logger.org.apache.kafka.connect.runtime.WorkerSourceTask=INFO\n"
            "log4j.logger.io.debezium.connector.postgresql=INFO\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )

    def spec(self) -> ProcessSpec:
        argv = [
            self._java(),
            "-Xms64m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true",  # bind 127.0.0.1 itself, not the IPv4-mapped ::ffff:127.0.0.1
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            "-cp",
            f"{self.libs}/*",
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(self.dir / "worker.properties"),
            str(self.dir / "connector.properties"),
        ]
        return ProcessSpec(self.name, argv, self.log_file, self.pid_file, ports=[self.port], cwd=self.dir)

    # -- health ----------------------------------------------------------------------------------
    def connector_status(self) -> dict[str, Any]:
        """Connect's ``GET /connectors/<name>/status``; :class:`ComponentError` naming the log otherwise."""
        try:
            r = httpx.get(f"{self.endpoint()}/status", timeout=3)
            r.raise_for_status()
            return dict(r.json())
        except (httpx.HTTPError, ValueError) as e:
            raise ComponentError(self.name, f"Connect REST API: {e}", str(self.log_file)) from e

    def problem(self) -> str:
        """'' when the connector and its task run; else what Connect reports (first trace line)."""
        try:
            status = self.connector_status()
        except ComponentError as e:
            return str(e)
        connector: dict[str, Any] = status.get("connector") or {}
        tasks: list[dict[str, Any]] = status.get("tasks") or []
        states = [str(connector.get("state", "?"))] + [str(t.get("state", "?")) for t in tasks]
        if not tasks:
            return f"connector {states[0]}, no task yet"
        if all(s == "RUNNING" for s in states):
            return self._slot_problem()
        traces = [str(t.get("trace", "")).splitlines()[0] for t in tasks if t.get("trace")]
        return f"connector {states[0]}, tasks {', '.join(states[1:])}" + (f": {traces[0]}" if traces else "")

    def _slot_problem(self) -> str:
        """'' when PostgreSQL shows the connector's replication slot in use (the stream is connected).

        Why not trust Connect's RUNNING alone: when PostgreSQL goes away, Debezium keeps its task
        RUNNING and retries every 10 s; only the slot says whether changes flow right now.
        """
        import psycopg

        from .components import DB_NAME, DB_USER

        running = "connector and task RUNNING"
        try:
            with psycopg.connect(host="127.0.0.1", port=self.settings.ports.postgres, user=DB_USER,
                                 dbname=DB_NAME, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                                   (CDC_SLOT,)).fetchone()
        except Exception as e:  # noqa: BLE001 - any failure is "not streaming"
            return f"{running}, but PostgreSQL cannot be asked about the slot: {type(e).__name__}"
        if row is None:
            return f"{running}, but replication slot {CDC_SLOT} does not exist yet"
        return "" if row[0] else f"{running}, but replication slot {CDC_SLOT} is not streaming"

    def gave_up(self) -> str | None:
        """Why Connect will not become healthy by waiting: the connector or its task FAILED (its
        JVM stays up, so ``up`` would otherwise wait for the whole timeout); None otherwise."""
        try:
            status = self.connector_status()
        except ComponentError:
            return None  # not answering yet: still starting
        connector: dict[str, Any] = status.get("connector") or {}
        tasks: list[dict[str, Any]] = status.get("tasks") or []
        if connector.get("state") == "FAILED" or any(t.get("state") == "FAILED" for t in tasks):
            return self.problem()
        return None

    def healthy(self) -> bool:
        return self.problem() == ""
