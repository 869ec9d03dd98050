"""The fast `clinops up` of the local target keeps its guarantees.

What made the warm start fast must not loosen what ``up`` promises, so this checks:
processes start early (the gateway's process while LocalStack still boots) but verdicts keep
level order; a failure after such an early start still names the component and its log and
leaves no process or port behind; Python children keep their bytecode under the state dir
only when the installation has none; HAProxy probes a DOWN track every 250 ms.

Ports from the harness (tests/ports.py): one block for the platform, one for the failure path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import enterable_tmpdir
from ports import PortAllocator, PortBlock

from clinops_lib.config import PortMap, Settings
from clinops_lib.exceptions import ComponentError
from clinops_lib.targets.local import components
from clinops_lib.targets.local import supervisor as sup
from clinops_lib.targets.local.components import HAProxy, _venv_has_bytecode, python_env
from clinops_lib.targets.local.haproxy import HAProxyService, render_config
from clinops_lib.targets.local.state import LocalState
from clinops_lib.targets.local.target import LocalTarget

pytestmark = pytest.mark.component


def _state_dir() -> Path:
    return enterable_tmpdir("clinops-g-")


def _busy_ports(ports: PortMap) -> list[int]:
    return [p for p in ports.all_ports(len(components.SERVICES)) if sup.port_in_use(p)]


def _ready(state: LocalState, component: str) -> float:
    ready = state.components[component].ready_at
    assert ready is not None, f"{component} never became healthy"
    return ready


def _index(messages: list[str], prefix: str) -> int:
    hits = [i for i, m in enumerate(messages) if m.startswith(prefix)]
    assert hits, f"no progress line starts with {prefix!r}: {messages}"
    return hits[0]


# -- bytecode cache of Python children -----------------------------------------------------------
def test_python_env_puts_bytecode_under_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    settings = Settings(state_dir=tmp_path / "state")  # reads the variable (config.py)
    venv_python = tmp_path / "venv" / "bin" / "python"
    env = python_env(settings, venv_python)
    assert env["PYTHONDONTWRITEBYTECODE"] == ""
    prefix = Path(env["PYTHONPYCACHEPREFIX"])
    assert prefix.is_relative_to(settings.state_dir)

    # a real child: its bytecode lands under the prefix, none next to the source
    src = tmp_path / "src"
    src.mkdir()
    (src / "probe_mod.py").write_text("VALUE = 41 + 1\n")
    child_env = {**os.environ, **env, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", "import probe_mod; print(probe_mod.VALUE)"],
                         env=child_env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "42"
    assert list(prefix.rglob("probe_mod*.pyc")), f"no bytecode under {prefix}"
    assert not (src / "__pycache__").exists()

    # an edited module is recompiled, never run stale (same size, newer mtime)
    (src / "probe_mod.py").write_text("VALUE = 40 + 3\n")
    os.utime(src / "probe_mod.py", (1e9 + 10, 4e9))
    out = subprocess.run([sys.executable, "-c", "import probe_mod; print(probe_mod.VALUE)"],
                         env=child_env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "43"


def test_python_env_leaves_installed_bytecode_and_default_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path / "state", python_no_bytecode=True)
    site = tmp_path / "compiled-venv/lib/python3.11/site-packages"
    for pkg in ("a", "b"):
        (site / pkg / "__pycache__").mkdir(parents=True)
        (site / pkg / "__init__.py").write_text("")
    (site / "a/__pycache__/__init__.cpython-311.pyc").write_bytes(b"")
    compiled = tmp_path / "compiled-venv"
    assert not _venv_has_bytecode(compiled / "bin" / "python")  # one stray .pyc: not an installation's
    (site / "b/__pycache__/__init__.cpython-311.pyc").write_bytes(b"")
    _venv_has_bytecode.cache_clear()
    assert _venv_has_bytecode(compiled / "bin" / "python")
    assert python_env(settings, compiled / "bin" / "python") == {}  # use what the installation compiled
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    settings = Settings(state_dir=tmp_path / "state")  # the variable unset
    assert not settings.python_no_bytecode
    assert python_env(settings, tmp_path / "bare-venv" / "bin" / "python") == {}  # Python's default


# -- HAProxy probes DOWN tracks often --------------------------------------------------------------
def test_haproxy_down_interval_is_rendered(tmp_path: Path, port_block: PortBlock) -> None:
    svc = HAProxyService("svc", 1, 2, 3, 4, 100, 0)
    assert "downinter 1000ms" in render_config([svc], stats_port=5, admin_socket=tmp_path / "a.sock")
    assert "downinter 250ms" in render_config(
        [svc], stats_port=5, admin_socket=tmp_path / "a.sock", down_interval_ms=250
    )
    comp = HAProxy(Settings(state_dir=tmp_path / "state", ports=port_block.portmap()))
    comp.prepare()  # writes and validates (haproxy -c) the real config
    assert f"downinter {comp.down_interval_ms}ms" in (comp.dir / "haproxy.cfg").read_text()
    assert comp.down_interval_ms < 1000


# -- real components: early starts, level-ordered verdicts ----------------------------------------
@pytest.fixture(scope="module")
def levels_0_1(port_allocator: PortAllocator) -> Iterator[tuple[LocalTarget, list[str]]]:
    root = _state_dir()
    block = port_allocator.block()
    target = LocalTarget(Settings(state_dir=root / "state", ports=block.portmap()))
    messages: list[str] = []
    real_probe = components.LocalStack.healthy

    def probe_after_gateway_started(self: components.LocalStack) -> bool:
        # LocalStack's real probe, answered only once the gateway's process has been started:
        # an implementation that waited for LocalStack before starting the gateway would time
        # out here, whatever the relative boot speeds on the machine.
        return "clinical-gateway: starting" in " ".join(messages) and real_probe(self)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(components.LocalStack, "healthy", probe_after_gateway_started)
            target.up([0, 1], progress=messages.append)
        yield target, messages
    finally:
        target.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
        port_allocator.release(block)


@pytest.mark.slow
def test_gateway_process_starts_while_localstack_boots(levels_0_1: tuple[LocalTarget, list[str]]) -> None:
    target, messages = levels_0_1
    state = target.state()
    gateway = state.track("clinical-gateway", "stable")
    assert gateway is not None and gateway.ready_at is not None
    # the process was started before LocalStack was healthy (its imports overlap the boot) ...
    assert gateway.started_at < _ready(state, "localstack")
    assert _index(messages, "clinical-gateway: starting") < _index(messages, "localstack: healthy")
    # ... after the components it needs at start-up
    assert gateway.started_at >= _ready(state, "postgresql")
    assert gateway.started_at >= _ready(state, "redis")


@pytest.mark.slow
def test_verdicts_keep_level_order(levels_0_1: tuple[LocalTarget, list[str]]) -> None:
    target, messages = levels_0_1
    state = target.state()
    gateway = state.track("clinical-gateway", "stable")
    assert gateway is not None and gateway.ready_at is not None
    level0 = ("postgresql", "redis", "localstack", "haproxy")
    # Level 1 is reported ready only after every Level 0 component is healthy
    ready = _index(messages, "clinical-gateway: ready")
    assert all(_index(messages, f"{c}: healthy") < ready for c in level0)
    assert gateway.ready_at >= max(_ready(state, c) for c in level0)
    rows = {s.component: s.health for s in target.status() if s.level in (0, 1)}
    assert {c: rows[c] for c in (*level0, "clinical-gateway")} == dict.fromkeys(
        (*level0, "clinical-gateway"), "healthy")


@pytest.mark.slow
def test_failure_after_an_early_start_stops_everything(
    monkeypatch: pytest.MonkeyPatch, port_block: PortBlock
) -> None:
    # A LocalStack that never answers its health check (a hung boot): the real process starts,
    # only its probe is held at "not yet" so the timeout path does not depend on boot speed
    # (with compiled bytecode LocalStack can be healthy before its wait even begins).
    monkeypatch.setattr(components.LocalStack, "healthy", lambda self: False)
    root = _state_dir()
    settings = Settings(state_dir=root / "state", ports=port_block.portmap())
    target = LocalTarget(settings, timeouts={"localstack": 1.0})
    messages: list[str] = []
    try:
        with pytest.raises(ComponentError) as err:
            target.up([0, 1], progress=messages.append)
        assert err.value.component == "localstack"
        assert "not healthy within 1s" in str(err.value) and "localstack.log" in str(err.value)
        assert "clinical-gateway: starting" in " ".join(messages)  # it had been started early ...
        state = target.state()  # ... and was stopped with everything else this call started
        assert state.components == {}
        assert state.track("clinical-gateway", "stable") is None
        assert list((settings.state_dir / "run").glob("*.pid")) == []
        assert _busy_ports(settings.ports) == []
    finally:
        target.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)


# -- creating a database on a loaded machine ------------------------------------------------------
class _RecordingConnection:
    """Stands in for a psycopg connection once the server takes one: records the SQL it is sent."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    def __enter__(self) -> _RecordingConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> _RecordingConnection:
        self.statements.append(sql)
        return self

    def fetchone(self) -> None:
        return None  # "no such database yet"


def test_create_database_waits_out_connect_timeouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CI saw PostgreSQL answer its health check and then miss the next 2-second connect while the
    machine built Kubernetes; creating the database retries such connection failures."""
    import psycopg

    attempts: list[float] = []
    statements: list[str] = []

    def connect(**kwargs: object) -> _RecordingConnection:
        attempts.append(float(kwargs["connect_timeout"]))  # type: ignore[arg-type]
        if len(attempts) < 3:
            raise psycopg.errors.ConnectionTimeout("connection timeout expired")
        return _RecordingConnection(statements)

    monkeypatch.setattr(psycopg, "connect", connect)
    monkeypatch.setattr(components.time, "sleep", lambda _s: None)
    settings = Settings(state_dir=tmp_path / "state", evidence_dir=tmp_path / "ev")
    components._create_database(settings, "clinops", "postgresql", tmp_path / "pg.log")
    assert len(attempts) == 3
    assert any(s.startswith('CREATE DATABASE "clinops"') for s in statements), statements


def test_create_database_names_the_deadline_and_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    def connect(**_kwargs: object) -> None:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg, "connect", connect)
    settings = Settings(state_dir=tmp_path / "state", evidence_dir=tmp_path / "ev")
    with pytest.raises(ComponentError) as caught:
        components._create_database(settings, "mlflow", "mlflow", tmp_path / "m.log", deadline_seconds=0.0)
    message = str(caught.value)
    assert "could not create database mlflow" in message and "within 0 s" in message
    assert str(tmp_path / "m.log") in message


def test_create_database_does_not_retry_an_sql_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal by the server (here: no privilege) fails the same way every time: no retries."""
    import psycopg

    calls: list[int] = []

    def connect(**_kwargs: object) -> None:
        calls.append(1)
        raise psycopg.errors.InsufficientPrivilege("permission denied to create database")

    monkeypatch.setattr(psycopg, "connect", connect)
    settings = Settings(state_dir=tmp_path / "state", evidence_dir=tmp_path / "ev")
    with pytest.raises(ComponentError, match="permission denied"):
        components._create_database(settings, "clinops", "postgresql", tmp_path / "pg.log")
    assert calls == [1]
