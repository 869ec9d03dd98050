"""Level 1's ``debezium-cdc`` (Kafka Connect + Debezium's PostgreSQL connector) on the local target.

Unit tier: versions agree with the chart (Connect at the broker's version), the opt-in rule, the
CLI refusing an unknown ``--with`` before anything runs, the SCRAM verifier. Component tier (real
PostgreSQL, broker and Connect; nothing mocked): a partial ``up`` leaves Connect out, naming it
starts it; a row inserted into the observations table arrives as a Debezium change event on the
CDC topic; the CDC audit finds every row and names the one without a gateway event; the role's
password is in no log, config or state file; a killed Connect shows as unhealthy naming its log,
and the next ``up`` restarts it; PostgreSQL killed under Connect shows as a slot not streaming
until ``up`` restarts it and the stream resumes; ``down`` stops Connect; a connector task that
FAILS ends ``up``'s wait at once, naming the failure and the log.

Ports: a block from the harness (tests/ports.py), state under /tmp.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import REPO, enterable_tmpdir
from ports import PortAllocator

from clinops_lib import catalog, charts
from clinops_lib.config import PortMap, Settings
from clinops_lib.exceptions import ParameterError
from clinops_lib.targets.local.kafka_connect import (
    DebeziumConnect,
    cdc_topic,
    connect_versions,
    scram_verifier,
)


# -- unit ----------------------------------------------------------------------------------------
@pytest.mark.unit
def test_connect_runs_at_the_brokers_version_from_the_chart() -> None:
    kafka, debezium = connect_versions(Settings())
    assert kafka == charts.subchart_values("data-ingestion", "dev")["kafka"]["version"]
    pom = (REPO / "tools/kafka-connect/pom.xml").read_text()
    assert f"<kafka.version>{kafka}</kafka.version>" in pom  # what setup.sh resolves into the cache
    assert f"<debezium.version>{debezium}</debezium.version>" in pom
    connect = DebeziumConnect(Settings(ports=PortMap(26800)))
    assert connect.home.name == f"{kafka}-debezium-{debezium}"
    assert connect.port == 26841 and connect.port in PortMap(26800).all_ports(2)


@pytest.mark.unit
def test_opt_in_components_a_partial_up_leaves_out() -> None:
    row = catalog.component("debezium-cdc")
    assert row.level == 1 and row.opt_in and row.runs_on("local") and not row.runs_on("kind")
    assert catalog.opt_in_components([0, 1, 4, 6]) == []  # the drills' levels
    assert catalog.opt_in_components(list(range(7))) == ["debezium-cdc"]  # the whole platform
    assert catalog.opt_in_components([0], ["debezium-cdc"]) == ["debezium-cdc"]
    with pytest.raises(ParameterError, match="with.*'kafka' is not an opt-in component"):
        catalog.opt_in_components([0, 1], ["kafka"])


@pytest.mark.unit
def test_cli_refuses_an_unknown_opt_in_before_anything_starts(tmp_path: Path) -> None:
    env = {**os.environ, "CLINOPS_STATE_DIR": str(tmp_path / "state"), "CLINOPS_PORT_BASE": "26800"}
    out = subprocess.run([sys.executable, "-m", "clinops_lib.cli", "up", "--levels", "1", "--with", "nope"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert "with" in out.stderr and "'nope'" in out.stderr
    assert not (tmp_path / "state" / "run").exists()  # nothing started


@pytest.mark.unit
def test_scram_verifier_has_postgres_form_and_hides_the_password() -> None:
    password = "correct horse battery staple"
    verifier = scram_verifier(password, salt=b"0123456789abcdef")
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    assert method == "SCRAM-SHA-256" and iterations_salt.startswith("4096:")
    assert len(keys.split(":")) == 2 and password not in verifier
    assert verifier == scram_verifier(password, salt=b"0123456789abcdef")
    assert verifier != scram_verifier(password)  # a fresh salt each time by default


@pytest.mark.unit
def test_missing_jars_are_refused_before_the_database_is_touched(tmp_path: Path) -> None:
    from clinops_lib.exceptions import PrerequisiteError

    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", ports=PortMap(26800))
    with pytest.raises(PrerequisiteError, match=r"debezium-cdc: connect-runtime-.*scripts/setup\.sh"):
        DebeziumConnect(settings).prepare()  # no PostgreSQL listens on 26800: it was never asked
    assert not (tmp_path / "state" / "debezium-cdc" / "secrets.properties").exists()


# -- component -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def platform(port_allocator: PortAllocator) -> Iterator[object]:
    from clinops_lib.targets.local.target import LocalTarget

    root = enterable_tmpdir("clinops-cdc-")
    block = port_allocator.block()
    target = LocalTarget(Settings(state_dir=root / "state", ports=block.portmap()))
    try:
        yield target
    finally:
        target.down(purge=True)
        target.close()
        shutil.rmtree(root, ignore_errors=True)
        port_allocator.release(block)


def _row(target: object, name: str):  # type: ignore[no-untyped-def]
    return next(r for r in target.status() if r.component == name)  # type: ignore[attr-defined]


def _insert_observation(port: int, subject: str) -> int:
    with psycopg.connect(host="127.0.0.1", port=port, user="clinops", dbname="clinops", autocommit=True) as c:
        found = c.execute(
            "INSERT INTO clinical_observations (study_id, site_id, subject_id, visit, observed_at, "
            "adverse_event, vitals, gateway_version) VALUES ('STUDY-CDC', 'SITE-CDC', %s, 1, now(), false, "
            "'{\"hr\": 71}', 'cdc-test') RETURNING id",
            (subject,),
        ).fetchone()
    assert found is not None
    return int(found[0])


def _post_through_gateway(target, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Post ``n`` synthetic observations through the gateway; their ids, once the consumer group
    has persisted each one's event (``observation_events``), within 120 s."""
    import random

    import httpx

    from clinops_lib.services.synthetic import observation_payload

    rng = random.Random(1414)
    with httpx.Client(base_url=target.service_url("clinical-gateway"), timeout=10) as gateway:
        answers = [gateway.post("/v1/observations", json=observation_payload(rng)) for _ in range(n)]
    assert [a.status_code for a in answers] == [201] * n, [a.text for a in answers]
    ids = [int(a.json()["id"]) for a in answers]
    port = target.settings.ports.postgres
    deadline = time.monotonic() + 120
    with psycopg.connect(host="127.0.0.1", port=port, user="clinops", dbname="clinops", autocommit=True) as c:
        while time.monotonic() < deadline:
            found = c.execute("SELECT count(DISTINCT observation_id) FROM observation_events "
                              "WHERE observation_id = ANY(%s)", (ids,)).fetchone()
            if found is not None and found[0] == n:
                return ids
            time.sleep(0.5)
    raise AssertionError(f"the consumer group did not persist the events of {ids} within 120 s")


def _change_event(bootstrap: str, subject: str, timeout: float) -> tuple[dict, dict]:
    """The first change event on the CDC topic whose row has ``subject`` (key, value)."""
    from aiokafka import AIOKafkaConsumer

    async def find() -> tuple[dict, dict]:
        consumer = AIOKafkaConsumer(cdc_topic(), bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            async for message in consumer:
                value = json.loads(message.value) if message.value else None
                if value and (value.get("after") or {}).get("subject_id") == subject:
                    return json.loads(message.key), value
        finally:
            await consumer.stop()
        raise AssertionError("consumer ended")

    return asyncio.run(asyncio.wait_for(find(), timeout))


@pytest.mark.component
def test_cdc_streams_the_observations_table_and_a_killed_connect_names_its_log(platform) -> None:  # type: ignore[no-untyped-def]
    target = platform
    settings = target.settings
    # a partial `up` (what a drill asks for) does not start Connect, nor list it
    rows = target.up([0, 1])
    assert "debezium-cdc" not in {r.component for r in rows}
    assert "debezium-cdc" not in target.state().components
    assert _row(target, "debezium-cdc").health == "stopped"
    assert "opt-in" in _row(target, "debezium-cdc").detail

    # naming it starts it; healthy = the REST API reports the connector and its task RUNNING
    rows = target.up([1], opt_in=["debezium-cdc"])
    cdc = next(r for r in rows if r.component == "debezium-cdc")
    assert cdc.health == "healthy", cdc
    connect = DebeziumConnect(settings)
    status = connect.connector_status()
    assert status["connector"]["state"] == "RUNNING"
    assert [t["state"] for t in status["tasks"]] == ["RUNNING"]

    # a row inserted into the observations table arrives as a Debezium change event
    subject = f"CDC-{uuid.uuid4().hex[:10]}"
    row_id = _insert_observation(settings.ports.postgres, subject)
    key, event = _change_event(f"127.0.0.1:{settings.ports.kafka}", subject, timeout=120)
    assert key == {"id": row_id}
    assert event["op"] == "c" and event["before"] is None
    assert event["after"]["id"] == row_id and event["after"]["study_id"] == "STUDY-CDC"
    assert event["source"]["table"] == "clinical_observations"
    assert event["source"]["connector"] == "postgresql"

    # the audit the changelog makes possible: every stored row is in it; a row written past the
    # gateway (this test's INSERT) has no gateway event, and the audit says so, while the rows
    # posted through the gateway have theirs (once the consumer group persisted them)
    posted = _post_through_gateway(target, 5)
    report = target.cdc_audit(timeout=120)
    assert report.complete and report.missing_from_changelog == [], report
    assert report.rows_in_table == 1 + len(posted) and report.operations.get("c") == 1 + len(posted)
    assert report.without_gateway_event == [row_id], report

    # the replication role's password is in the 0600 secrets file only
    password = connect.secrets_file.read_text().split("password=", 1)[1].strip()
    assert len(password) >= 24 and (connect.secrets_file.stat().st_mode & 0o077) == 0
    leaks = [p for p in settings.state_dir.rglob("*") if p.is_file() and p != connect.secrets_file
             and password.encode() in p.read_bytes()]
    assert not leaks, leaks
    config = json.dumps(connect.connector_status()) + (connect.dir / "connector.properties").read_text()
    assert password not in config and "${file:" in config

    # killed: unhealthy, naming its log; the next partial `up` restarts it (it is part of this platform)
    pid = target.state().components["debezium-cdc"].pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _row(target, "debezium-cdc").health != "unhealthy":
        time.sleep(0.2)
    dead = _row(target, "debezium-cdc")
    assert dead.health == "unhealthy" and str(pid) in dead.detail
    assert str(connect.log_file) in dead.detail and dead.log_file == str(connect.log_file)
    assert connect.log_file.exists()
    rows = target.up([0, 1])
    assert next(r for r in rows if r.component == "debezium-cdc").health == "healthy"
    # and it resumes from its offsets: a second row arrives too
    subject2 = f"CDC-{uuid.uuid4().hex[:10]}"
    row2 = _insert_observation(settings.ports.postgres, subject2)
    assert _change_event(f"127.0.0.1:{settings.ports.kafka}", subject2, timeout=120)[0] == {"id": row2}

    # PostgreSQL killed under it: Connect still says RUNNING (Debezium retries), the status does not:
    # the slot is not streaming; `up` restarts PostgreSQL and waits for the stream, which resumes
    pg_pid = target.state().components["postgresql"].pid
    os.kill(pg_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _row(target, "debezium-cdc").health != "unhealthy":
        time.sleep(0.2)
    broken = _row(target, "debezium-cdc")
    assert broken.health == "unhealthy" and "slot" in broken.detail and str(connect.log_file) in broken.detail
    messages: list[str] = []
    rows = target.up([0, 1], progress=messages.append)
    assert any("debezium-cdc: running, waiting for it to stream again" in m for m in messages), messages
    assert next(r for r in rows if r.component == "debezium-cdc").health == "healthy"
    subject3 = f"CDC-{uuid.uuid4().hex[:10]}"
    row3 = _insert_observation(settings.ports.postgres, subject3)
    assert _change_event(f"127.0.0.1:{settings.ports.kafka}", subject3, timeout=120)[0] == {"id": row3}

    # `down` stops it: no process, the REST port free
    from clinops_lib.targets.local import supervisor as sup

    record = target.state().components["debezium-cdc"]
    target.down()
    assert not record.alive() and not sup.port_in_use(connect.port)


@pytest.mark.component
def test_a_failed_connector_task_ends_the_wait_at_once_naming_the_log(platform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A connector whose task FAILS keeps Connect's JVM up: `up` must say so when Connect reports
    it, not after the whole health timeout. Fault: the connector is pointed at a publication that
    does not exist (written after the platform's own prepare, which would otherwise create it)."""
    from clinops_lib.exceptions import ComponentError
    from clinops_lib.targets.local import kafka_connect

    target = platform
    target.up([0, 1])  # this module's platform, without Connect
    prepare = kafka_connect.DebeziumConnect.prepare

    def prepare_then_break(self):  # type: ignore[no-untyped-def]
        prepare(self)
        props = self.dir / "connector.properties"
        props.write_text(props.read_text().replace(
            f"publication.name={kafka_connect.CDC_PUBLICATION}", "publication.name=no_such_publication"))

    monkeypatch.setattr(kafka_connect.DebeziumConnect, "prepare", prepare_then_break)
    connect = DebeziumConnect(target.settings)
    with pytest.raises(ComponentError) as failed:
        target.up([1], opt_in=["debezium-cdc"])
    message = str(failed.value)
    # ended by the FAILED state ("will not become healthy"), not by the timeout ("not healthy within")
    assert "debezium-cdc" in message and "will not become healthy" in message and "FAILED" in message
    assert str(connect.log_file) in message
    assert "debezium-cdc" not in target.state().components  # the failed start was rolled back
    from clinops_lib.targets.local import supervisor as sup

    assert not sup.port_in_use(connect.port)
