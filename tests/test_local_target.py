"""The local target against the real components: PostgreSQL, Redis, LocalStack, HAProxy,
Prometheus and the services, checked through their own protocols; then the failure paths
(port taken, missing binary, health timeout, killed component) and a clean ``down``.

Ports from the harness (tests/ports.py): the shared platform on one block, each failure path on its own.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import enterable_tmpdir
from ports import PortAllocator, PortBlock

from clinops_lib.config import PortMap, Settings
from clinops_lib.exceptions import (
    ComponentError,
    MetricsError,
    ParameterError,
    PortInUseError,
    PrerequisiteError,
    TrafficError,
)
from clinops_lib.targets.local import components
from clinops_lib.targets.local import supervisor as sup
from clinops_lib.targets.local.target import LocalTarget

pytestmark = [pytest.mark.component, pytest.mark.slow]


def _state_dir() -> Path:
    return enterable_tmpdir("clinops-c1-")


def _all_ports(ports: PortMap) -> list[int]:
    return ports.all_ports(len(components.SERVICES))


def _processes_under(path: Path) -> list[int]:
    """Pids whose command line or environment mention ``path`` (our components)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmd:
            out.append(int(entry.name))
    return out


@pytest.fixture(scope="module")
def platform(port_allocator: PortAllocator) -> Iterator[LocalTarget]:
    root = _state_dir()
    block = port_allocator.block()
    target = LocalTarget(Settings(state_dir=root / "state", ports=block.portmap()))
    try:
        statuses = target.up([0, 1, 4, 6])
        bad = [s for s in statuses if s.health not in ("healthy", "not on this target")]
        assert not bad, bad
        yield target
    finally:
        target.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
        port_allocator.release(block)


def _boto(target: LocalTarget, service: str):  # type: ignore[no-untyped-def]
    return target._boto(service)


def _versions(url: str, n: int, path: str = "/readyz") -> Counter[str]:
    with httpx.Client(timeout=10) as client:
        counts: Counter[str] = Counter()
        for _ in range(n):
            r = client.get(url + path)
            counts[f"{r.status_code}:{r.headers.get('X-Clinops-Version', '?')}"] += 1
        return counts


# -- the platform, through real protocols ----------------------------------------------------------
def test_second_up_changes_nothing(platform: LocalTarget) -> None:
    before = {k: v.pid for k, v in platform.state().components.items()}
    messages: list[str] = []
    statuses = platform.up([0, 1, 4, 6], progress=messages.append)
    assert "already up: nothing to do" in messages
    assert {k: v.pid for k, v in platform.state().components.items()} == before
    assert all(s.detail == "already up" for s in statuses if s.health == "healthy")


def _listeners() -> dict[int, set[str]]:
    """Listening TCP ports -> the addresses they are bound to, from /proc/net/tcp{,6}."""
    out: dict[int, set[str]] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr, port = fields[1].split(":")
            out.setdefault(int(port, 16), set()).add(addr if len(addr) == width else "?")
    return out


def test_every_component_listens_on_loopback_only(platform: LocalTarget) -> None:
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1 (little-endian hex)
    listening = _listeners()
    ports = [p for p in _all_ports(platform.settings.ports) if p in listening]
    assert platform.settings.ports.localstack in ports and platform.settings.ports.postgres in ports
    exposed = {p: sorted(listening[p] - loopback) for p in ports if listening[p] - loopback}
    assert not exposed, f"bound beyond loopback: {exposed}"


def test_postgres_sql(platform: LocalTarget) -> None:
    import psycopg

    dsn = f"host=127.0.0.1 port={platform.settings.ports.postgres} user=clinops dbname=clinops"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS c1_probe (id int primary key, note text)")
        conn.execute("INSERT INTO c1_probe VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET note = 'y'")
        assert conn.execute("SELECT count(*) FROM c1_probe").fetchone() == (1,)
        version = conn.execute("SHOW server_version").fetchone()
        assert version is not None and str(version[0]).startswith("15")


def test_redis_protocol(platform: LocalTarget) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=platform.settings.ports.redis)
    key = f"c1:{uuid.uuid4()}"
    client.set(key, "v", ex=60)
    assert client.get(key) == b"v"
    assert client.info("server")["redis_version"].startswith("7")
    client.close()


def test_localstack_s3_sqs_sns_secrets(platform: LocalTarget) -> None:
    s3, sqs, sns, sm = (_boto(platform, s) for s in ("s3", "sqs", "sns", "secretsmanager"))
    # the model the Level 4 training job uploaded
    head = s3.head_object(Bucket=platform.services.model_bucket, Key=platform.services.model_key)
    assert head["ContentLength"] > 0
    name = f"c1-probe-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k", Body=b"payload")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"payload"
    q = sqs.create_queue(QueueName=name)["QueueUrl"]
    topic = sns.create_topic(Name=name)["TopicArn"]
    qarn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"})
    sns.publish(TopicArn=topic, Message="hello")
    msgs = sqs.receive_message(QueueUrl=q, WaitTimeSeconds=5, MaxNumberOfMessages=1).get("Messages", [])
    assert msgs and msgs[0]["Body"] == "hello"
    sm.create_secret(Name=name, SecretString="not-a-real-secret")
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "not-a-real-secret"
    # clean up so the inventory's drift check is not disturbed
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    sns.delete_topic(TopicArn=topic)
    sqs.delete_queue(QueueUrl=q)
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)


def test_prometheus_scrapes_services_and_haproxy(platform: LocalTarget) -> None:
    q = 'sum(up{job="clinical-gateway",track="stable"}) + sum(up{job="model-serving",track="stable"})'
    sup.wait_for("both stable tracks scraped", lambda: platform.prometheus_query(q) == 2.0, timeout=30)
    sup.wait_for("haproxy exporter scraped", lambda: platform.prometheus_query('up{job="haproxy"}') == 1.0,
                 timeout=30)
    assert platform.prometheus_query('up{job="clinical-gateway",track="canary"}') == 0.0
    assert platform.prometheus_query('up{job="nonexistent"}') is None
    with pytest.raises(MetricsError, match="series"):
        platform.prometheus_query("up")
    with pytest.raises(MetricsError, match="failed"):
        platform.prometheus_query("sum(")


def test_prometheus_loads_the_shared_rule_file(platform: LocalTarget) -> None:
    from clinops_lib.targets.local.components import Prometheus

    prom = Prometheus(platform.settings)
    assert prom.has_rules()
    groups = prom.rule_groups()
    assert groups, "Prometheus loaded no rule group from platform-rules.yaml"


def test_prometheus_config_without_rule_file_warns(tmp_path: Path, port_block: PortBlock) -> None:
    from clinops_lib.targets.local.components import Prometheus

    prom = Prometheus(Settings(state_dir=tmp_path, project_root=tmp_path, ports=port_block.portmap()))
    with pytest.warns(UserWarning, match="platform-rules.yaml is missing"):
        cfg = prom.config()
    assert "rule_files" not in cfg
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}  # type: ignore[union-attr]
    assert {"clinical-gateway", "model-serving", "haproxy"} <= set(jobs)
    labels = [c["labels"] for c in jobs["model-serving"]["static_configs"]]
    assert labels == [{"service": "model-serving", "track": t} for t in ("stable", "canary")]


def test_prometheus_unreachable_and_injected_transport(tmp_path: Path, port_block: PortBlock) -> None:
    offline = LocalTarget(Settings(state_dir=tmp_path, ports=port_block.portmap()))
    with pytest.raises(MetricsError, match="unreachable"):
        offline.prometheus_query("up")

    def reply(request: httpx.Request) -> httpx.Response:
        assert request.url.params["query"] == "x"
        return httpx.Response(200, json={"status": "success",
                                         "data": {"resultType": "vector", "result": [{"value": [0, "NaN"]}]}})

    fake = LocalTarget(Settings(state_dir=tmp_path), transport=httpx.MockTransport(reply))
    assert fake.prometheus_query("x") is None


def test_services_answer_through_haproxy(platform: LocalTarget) -> None:
    from clinops_lib.services.synthetic import observation_payload, prediction_payload

    versions = platform._chart_versions()
    rng = random.Random(7)
    gw = httpx.post(platform.service_url("clinical-gateway") + "/v1/observations",
                    json=observation_payload(rng), timeout=10)
    assert gw.status_code == 201, gw.text
    assert gw.headers["X-Clinops-Version"] == versions["clinical-gateway"]
    ms = httpx.post(platform.service_url("model-serving") + "/v1/predict", json=prediction_payload(rng),
                    timeout=10)
    assert ms.status_code == 200, ms.text
    assert ms.headers["X-Clinops-Version"] == versions["model-serving"]
    bad = httpx.post(platform.service_url("clinical-gateway") + "/v1/observations", json={}, timeout=10)
    assert bad.status_code == 422


def test_bad_input_is_refused_before_any_change(platform: LocalTarget) -> None:
    with pytest.raises(ParameterError, match="weight"):
        platform.set_canary_weight("clinical-gateway", 150)
    with pytest.raises(ParameterError, match="service"):
        platform.deploy("nope", "1.0.0")
    with pytest.raises(ParameterError, match="version"):
        platform.deploy("clinical-gateway", "1.0; rm -rf /")
    with pytest.raises(TrafficError, match="no canary"):
        platform.set_canary_weight("clinical-gateway", 10)
    assert platform.canary_weight("clinical-gateway") == 0


def test_canary_split_abort_and_promote(platform: LocalTarget) -> None:
    svc = "clinical-gateway"
    stable = platform.tracks(svc)["stable"].version
    state = platform.deploy(svc, "9.9.0-canary", track="canary")
    assert state.running and state.version == "9.9.0-canary"
    assert platform.canary_weight(svc) == 0
    assert _versions(platform.service_url(svc), 50) == Counter({f"200:{stable}": 50})
    # the preview frontend reaches the canary alone
    assert _versions(platform.preview_url(svc), 10) == Counter({"200:9.9.0-canary": 10})

    platform.set_canary_weight(svc, 25)
    assert platform.canary_weight(svc) == 25
    counts = _versions(platform.service_url(svc), 400)
    assert counts[f"200:{stable}"] + counts["200:9.9.0-canary"] == 400, counts
    assert abs(counts["200:9.9.0-canary"] / 400 - 0.25) <= 0.07, counts

    platform.abort(svc)
    assert platform.canary_weight(svc) == 0
    assert _versions(platform.service_url(svc), 50) == Counter({f"200:{stable}": 50})
    assert platform.tracks(svc)["canary"].running  # abort keeps the canary until retired

    platform.set_canary_weight(svc, 50)
    promoted = platform.promote(svc)
    assert promoted.version == "9.9.0-canary" and promoted.track == "stable" and promoted.running
    assert not platform.tracks(svc)["canary"].running
    assert platform.canary_weight(svc) == 0
    assert _versions(platform.service_url(svc), 50) == Counter({"200:9.9.0-canary": 50})


def test_killed_canary_gets_no_user_errors(platform: LocalTarget) -> None:
    svc = "model-serving"
    stable = platform.tracks(svc)["stable"].version
    platform.deploy(svc, "3.0.0-bad", track="canary")
    platform.set_canary_weight(svc, 50)
    entry = platform.state().track(svc, "canary")
    assert entry is not None
    os.kill(entry.pid, signal.SIGKILL)
    counts = _versions(platform.service_url(svc), 200)
    # connection failures on the dead canary are retried on stable (option redispatch + retry-on)
    assert counts == Counter({f"200:{stable}": 200}), counts
    assert not platform.tracks(svc)["canary"].running
    platform.retire(svc, "canary")
    assert platform.canary_weight(svc) == 0


def test_killed_component_shows_unhealthy_and_up_restarts_it(platform: LocalTarget) -> None:
    entry = platform.state().components["redis"]
    os.kill(entry.pid, signal.SIGKILL)
    sup.wait_for("redis to die", lambda: not entry.alive(), timeout=10)
    row = {s.component: s for s in platform.status()}["redis"]
    assert row.health == "unhealthy" and str(entry.pid) in row.detail
    platform.up([0])
    assert {s.component: s for s in platform.status()}["redis"].health == "healthy"


def test_down_leaves_no_process_or_port(platform: LocalTarget) -> None:
    state = platform.state()
    pids = [(v.pid, v.start_ticks) for v in state.components.values()]
    pids += [(t.pid, t.start_ticks) for s in state.services.values() for t in (s.stable, s.canary) if t]
    assert len(pids) >= 7
    platform.down()
    assert not any(sup.is_alive(p, t) for p, t in pids)
    busy = [p for p in _all_ports(platform.settings.ports) if sup.port_in_use(p)]
    assert busy == []
    assert _processes_under(platform.settings.state_dir) == []
    assert platform.settings.state_dir.exists()  # down keeps state (warm start); purge removes it
    platform.down(purge=True)
    assert not platform.settings.state_dir.exists()


# -- failure paths (separate port block, own state dirs) ------------------------------------------
def _assert_nothing_left(settings: Settings) -> None:
    busy = [p for p in _all_ports(settings.ports) if sup.port_in_use(p)]
    assert busy == []
    assert _processes_under(settings.state_dir) == []


def test_port_in_use_names_component_and_starts_nothing(port_block: PortBlock) -> None:
    root = _state_dir()
    settings = Settings(state_dir=root / "state", ports=port_block.portmap())
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", settings.ports.redis))
    blocker.listen()
    try:
        with pytest.raises(PortInUseError) as err:
            LocalTarget(settings).up([0])
        assert err.value.component == "redis"
        assert err.value.log_file and "redis.log" in str(err.value)
        blocker.close()
        _assert_nothing_left(settings)
    finally:
        blocker.close()
        LocalTarget(settings).down(purge=True)
        shutil.rmtree(root, ignore_errors=True)


def test_health_timeout_names_component_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, port_block: PortBlock
) -> None:
    # A LocalStack that never answers its health check (a hung boot): the real process starts,
    # only its probe is held at "not yet" so the timeout path does not depend on boot speed
    # (with compiled bytecode LocalStack can be healthy before its wait even begins).
    monkeypatch.setattr(components.LocalStack, "healthy", lambda self: False)
    root = _state_dir()
    settings = Settings(state_dir=root / "state", ports=port_block.portmap())
    target = LocalTarget(settings, timeouts={"localstack": 1.0})
    try:
        with pytest.raises(ComponentError) as err:
            target.up([0])
        assert err.value.component == "localstack"
        assert "not healthy within 1s" in str(err.value) and "localstack.log" in str(err.value)
        # postgresql and redis were started by this call: stopped again
        assert target.state().components == {}
        _assert_nothing_left(settings)
    finally:
        target.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)


def test_missing_binary_is_prerequisite_error_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, port_block: PortBlock
) -> None:
    root = _state_dir()
    settings = Settings(state_dir=root / "state", ports=port_block.portmap())
    target = LocalTarget(settings)
    # postgres has an absolute path; redis-server is then not found
    monkeypatch.setenv("PATH", str(root / "empty-bin"))
    try:
        with pytest.raises(PrerequisiteError, match="redis-server") as err:
            target.up([0])
        assert "redis.log" in str(err.value)
        monkeypatch.undo()
        _assert_nothing_left(settings)
    finally:
        monkeypatch.undo()
        target.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
