"""The local target's state file (clinops_lib/targets/local/state.py): typed records, the
versioned on-disk form, refusal of forms this code cannot read, atomic writes under the lock.

No process is started: the records name pids of this test process or of none.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from clinops_lib.cli import main
from clinops_lib.config import Settings
from clinops_lib.exceptions import StateFileError
from clinops_lib.targets.local import state as st
from clinops_lib.targets.local import supervisor as sup
from clinops_lib.targets.local.target import LocalTarget

pytestmark = pytest.mark.unit

#: What the target wrote before the typed state (session 2): no "version", the same fields.
UNVERSIONED = {
    "components": {
        "redis": {"name": "redis", "pid": 4242, "start_ticks": 77, "log_file": "/s/logs/redis.log",
                  "level": 0, "started_at": 10.0, "ready_at": 10.5, "version": "7.0.15",
                  "endpoint": "redis://127.0.0.1:1"},
    },
    "services": {
        "clinical-gateway": {
            "stable": {"name": "clinical-gateway-stable", "pid": 4243, "start_ticks": 78, "log_file": "g.log",
                       "version": "1.4.0", "fault": "none", "started_at": 11.0, "ready_at": 12.0,
                       "endpoint": "http://127.0.0.1:2"},
            "canary": None,
        },
    },
    "weights": {"clinical-gateway": [100, 0]},
    "training": {"exit": 0, "started_at": 1.0, "ready_at": 2.0, "version": "2.1.0", "log_file": "t.log"},
    "jobs": {"spark": {"started_at": 3.0, "ready_at": 4.0}},
    "pipeline_runs": {"spark": {"run_id": "r1", "state": "success", "started_at": 5.0, "ended_at": 6.0,
                                "duration": 1.0, "log_file": "s.log"}},
}


def _store(tmp_path: Path) -> st.StateStore:
    return st.StateStore(tmp_path / "state")


def _write(store: st.StateStore, doc: object) -> bytes:
    store.state_dir.mkdir(parents=True, exist_ok=True)
    store.path.write_text(json.dumps(doc))
    return store.path.read_bytes()


def test_missing_file_is_an_empty_platform(tmp_path: Path) -> None:
    assert _store(tmp_path).load() == st.LocalState()


def test_unversioned_form_is_migrated_and_saved_as_the_current_version(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _write(store, UNVERSIONED)
    state = store.load()
    assert state.components["redis"] == st.ComponentRecord(
        name="redis", pid=4242, start_ticks=77, log_file="/s/logs/redis.log", level=0, started_at=10.0,
        ready_at=10.5, version="7.0.15", endpoint="redis://127.0.0.1:1")
    gateway = state.track("clinical-gateway", "stable")
    assert gateway is not None and (gateway.pid, gateway.version, gateway.fault) == (4243, "1.4.0", "none")
    assert state.track("clinical-gateway", "canary") is None
    assert state.weight("clinical-gateway") == st.Weights(100, 0)
    assert state.training == st.TrainingRecord(exit=0, started_at=1.0, ready_at=2.0, version="2.1.0",
                                               log_file="t.log")
    assert state.jobs["spark"].ready_at == 4.0 and state.pipeline_runs["spark"].state == "success"
    store.save(state)
    saved = json.loads(store.path.read_text())
    assert saved["version"] == st.STATE_VERSION
    # nothing was lost on the way: the saved form is the old one plus its version
    assert {k: v for k, v in saved.items() if k != "version"} == UNVERSIONED
    assert store.load() == state


def test_round_trip_of_every_record(tmp_path: Path) -> None:
    store = _store(tmp_path)
    proc = sup.RunningProcess("haproxy", os.getpid(), 1, "h.log")
    state = st.LocalState()
    state.components["haproxy"] = st.make_record(st.ComponentRecord, proc, level=0, started_at=1.5)
    state.service("model-serving").set("canary", st.make_record(
        st.TrackRecord, sup.RunningProcess("model-serving-canary", 9, 2, "m.log"), version="2.0.0",
        fault="errors:5%", started_at=2.0, endpoint="http://127.0.0.1:3"))
    state.weights["model-serving"] = st.Weights(90, 10)
    store.save(state)
    assert store.load() == state
    assert json.loads(store.path.read_text())["weights"] == {"model-serving": [90, 10]}


def test_newer_version_is_refused_naming_the_file_and_nothing_changes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    before = _write(store, {**UNVERSIONED, "version": st.STATE_VERSION + 1, "something_new": {}})
    with pytest.raises(StateFileError) as err:
        store.load()
    assert str(store.path) in str(err.value) and "newer clinops" in str(err.value)
    target = LocalTarget(Settings(state_dir=store.state_dir))
    with pytest.raises(StateFileError):
        target.up([0])  # refused before anything starts ...
    with pytest.raises(StateFileError):
        target.down()  # ... or stops: the processes it names are not this code's to guess
    assert store.path.read_bytes() == before


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True])
def test_a_version_that_is_not_a_state_version_is_refused(tmp_path: Path, version: object) -> None:
    store = _store(tmp_path)
    _write(store, {**UNVERSIONED, "version": version})
    with pytest.raises(StateFileError, match="not a state version"):
        store.load()


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ("{not json", "is not JSON"),
        ([], "expected a JSON object"),
        ({"components": []}, "field components"),
        ({"components": {"redis": {"pid": 1}}}, "field components.redis"),
        ({"components": {"redis": {**UNVERSIONED["components"]["redis"], "pid": "12"}}},  # type: ignore[index]
         "field components.redis"),
        ({"services": {"clinical-gateway": {"stable": "x"}}}, "field services.clinical-gateway.stable"),
        ({"weights": {"clinical-gateway": [100]}}, "field weights.clinical-gateway"),
        ({"weights": {"clinical-gateway": [150, -50]}}, "field weights.clinical-gateway"),
    ],
)
def test_a_damaged_file_is_refused_naming_file_and_field(tmp_path: Path, doc: object, named: str) -> None:
    store = _store(tmp_path)
    store.state_dir.mkdir(parents=True)
    store.path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(StateFileError) as err:
        store.load()
    assert str(store.path) in str(err.value) and named in str(err.value)


def test_cli_exits_2_naming_the_state_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = _store(tmp_path)
    _write(store, {"version": 99})
    monkeypatch.setenv("CLINOPS_STATE_DIR", str(store.state_dir))
    monkeypatch.setenv("CLINOPS_TARGET", "local")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert str(store.path) in err and "state version 99" in err


def test_an_interrupted_write_leaves_the_last_complete_state(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    first = st.LocalState(weights={"clinical-gateway": st.Weights(100, 0)})
    store.save(first)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.save(st.LocalState(weights={"clinical-gateway": st.Weights(0, 100)}))
    monkeypatch.undo()
    assert store.load() == first


def test_locked_saves_what_the_body_did_before_it_raised(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(RuntimeError), store.locked() as state:
        state.weights["clinical-gateway"] = st.Weights(50, 50)
        raise RuntimeError("interrupted after the weights were set")
    assert store.load().weight("clinical-gateway") == st.Weights(50, 50)


def test_the_lock_serialises_read_modify_write(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(st.LocalState(jobs={"n": st.JobRecord(started_at=0, ready_at=0)}))

    def bump() -> None:
        for _ in range(25):
            with store.locked() as state:
                state.jobs["n"].ready_at += 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert store.load().jobs["n"].ready_at == 100  # no update lost
