"""The Target contract: the same tests against every target (issue 10).

Each parameter of the ``contract`` fixture is one target behind the same
:class:`~clinops_lib.targets.base.Target` calls:

* ``local`` — :class:`LocalTarget` with its real components (PostgreSQL, Redis, LocalStack,
  HAProxy, clinical-gateway, Prometheus) on a port block from the harness (tests/ports.py);
* ``kube`` — :class:`KubeconfigTarget` against kmock's Kubernetes emulator over real HTTP
  (``tests/kube_emulator.py``): a fake of the cluster, because no cluster can run here; its
  Prometheus answers are the ones the real Prometheus of the ``local`` parameter gives.

Adding a target (the real-cluster tier of issue 13, a third registered target): write a
fixture that yields a :class:`Contract` for it — the target, a ``changes()`` snapshot of what
the platform holds (compared before/after a refused call), and ``answers`` for the PromQL
queries below if its Prometheus cannot run them itself — and add its name to ``TARGETS``
(mark it ``cluster`` if it needs one). Every test here then runs against it unchanged.

What won where the targets used to disagree (each asserted below):
bad service / version / track / weight / level -> ``ParameterError`` naming the parameter,
before anything changes (was ``TrafficError`` on Kubernetes: bad input is exit 2 everywhere);
more than one series -> ``MetricsError`` (Kubernetes silently took the first series);
``status()`` -> the level catalog on every target; ``up()`` adds the required levels everywhere.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import pytest
from conftest import enterable_tmpdir
from kube_emulator import ROLLOUTS, Emulator, emulator, rollout
from ports import PortAllocator

from clinops_lib import catalog, charts
from clinops_lib.config import Settings, project_root
from clinops_lib.exceptions import ConfigError, MetricsError, ParameterError
from clinops_lib.targets.base import Target, get_target, register_target, target_names
from clinops_lib.targets.kube.target import KubeconfigTarget
from clinops_lib.targets.local.target import LocalTarget

__all__ = ["emulator"]

#: component: the local parameter starts real processes, the kube one a real HTTP emulator.
pytestmark = pytest.mark.component

ROOT = project_root()
GW = "clinical-gateway"
TARGETS = ["local", "kube"]

#: PromQL the contract reads, and what Prometheus answers (the local parameter asks a real one).
QUERIES: dict[str, dict[str, Any]] = {
    "vector(1)": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]},
    "scalar(vector(2))": {"resultType": "scalar", "result": [1, "2"]},
    'up{job="no-such-job"}': {"resultType": "vector", "result": []},
    "vector(0) / 0": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]},
    'label_replace(vector(1), "x", "a", "", "") or label_replace(vector(2), "x", "b", "", "")': {
        "resultType": "vector",
        "result": [{"metric": {"x": "a"}, "value": [1, "1"]}, {"metric": {"x": "b"}, "value": [1, "2"]}],
    },
}


@dataclass
class Contract:
    target: Target
    changes: Callable[[], Any]  # a snapshot of what the platform holds; equal = nothing changed
    levels_started: Callable[[], set[int]] = field(default=lambda: set())


@pytest.fixture(scope="module")
def local_contract(port_allocator: PortAllocator) -> Iterator[Contract]:
    root = enterable_tmpdir("clinops-contract-")
    block = port_allocator.block()
    target = LocalTarget(Settings(state_dir=root / "state", ports=block.portmap()))

    def changes() -> Any:
        state = target.state_path.read_bytes() if target.state_path.exists() else b""
        weights = target._admin().server_stats(GW) if target.state_path.exists() else {}
        return hashlib.sha256(state).hexdigest(), {k: (v.weight, v.status) for k, v in weights.items()}

    try:
        target.up("1,6")
        yield Contract(target, changes)
    finally:
        target.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
        port_allocator.release(block)


class _Helm:
    """Records Helm releases instead of installing them (no Helm against the emulator)."""

    def __init__(self) -> None:
        self.installed: list[str] = []

    def status(self, release: str) -> None:
        import helm_python as helm

        raise helm.HelmNotFoundError(release)

    def install(self, chart: str, release: str, values: Any, **kw: Any) -> None:
        self.installed.append(release)


@pytest.fixture()
def kube_contract(emulator: Emulator) -> Iterator[Contract]:
    steps = charts.canary_steps(GW, "dev")
    image = "ghcr.io/clinops/clinical-gateway:1.0.0"
    ns = "clinops-ingestion"
    emulator.put(ROLLOUTS, ns, GW, rollout(GW, ns, image=image, steps=steps))
    prom = ("/api/v1/namespaces/clinops-observability/services/kube-prometheus-stack-prometheus:9090"
            "/proxy/api/v1/query")
    for query, data in QUERIES.items():
        emulator.rule("get", prom, kmock.params(query=query)) << {"status": "success", "data": data}
    helm = _Helm()
    settings = Settings(target="kubeconfig", kubeconfig=emulator.kubeconfig, project_root=ROOT)
    target = KubeconfigTarget(settings, helm_config=helm, sleep=lambda s: None, poll_interval=0.01)

    def changes() -> Any:
        return [(str(r.url.path), r.data) for r in emulator.requests()
                if str(r.method.value).upper() in ("PATCH", "POST", "PUT", "DELETE")], list(helm.installed)

    def levels_started() -> set[int]:
        charts_ = {lv.chart: lv.number for lv in catalog.LEVELS}
        return {charts_[r.removeprefix("clinops-")] for r in helm.installed}

    yield Contract(target, changes, levels_started)
    target.close()


@pytest.fixture(params=TARGETS)
def contract(request: pytest.FixtureRequest) -> Contract:
    c: Contract = request.getfixturevalue(f"{request.param}_contract")
    return c


# -- bad input: the same error on every target, before anything changes -----------------------------------
BAD_CALLS: list[tuple[str, Callable[[Target], Any]]] = [
    ("service", lambda t: t.deploy("billing", "1.1.0")),
    ("service", lambda t: t.set_canary_weight("billing", 10)),
    ("service", lambda t: t.tracks("billing")),
    ("service", lambda t: t.service_url("billing")),
    ("service", lambda t: t.promote("billing")),
    ("service", lambda t: t.abort("billing")),
    ("version", lambda t: t.deploy(GW, "")),
    ("version", lambda t: t.deploy(GW, "1.1.0;rm -rf /")),
    ("version", lambda t: t.deploy(GW, "a/b:latest")),
    ("version", lambda t: t.deploy(GW, "v" * 65)),
    ("track", lambda t: t.deploy(GW, "1.1.0", track="green")),  # type: ignore[arg-type]
    ("track", lambda t: t.retire(GW, "blue")),  # type: ignore[arg-type]
    ("weight", lambda t: t.set_canary_weight(GW, 101)),
    ("weight", lambda t: t.set_canary_weight(GW, -1)),
    ("weight", lambda t: t.set_canary_weight(GW, True)),
    ("weight", lambda t: t.set_canary_weight(GW, 12.5)),  # type: ignore[arg-type]
    ("levels", lambda t: t.up("9")),
    ("levels", lambda t: t.up("one")),
    ("with", lambda t: t.up("1", opt_in=["kafka"])),  # not an opt-in component
    ("with", lambda t: t.up("1", opt_in=["nope"])),
]


@pytest.mark.parametrize(("parameter", "call"), BAD_CALLS,
                         ids=[f"{p}{i}" for i, (p, _) in enumerate(BAD_CALLS)])
def test_bad_input_is_a_parameter_error_before_any_change(contract: Contract, parameter: str,
                                                          call: Callable[[Target], Any]) -> None:
    before = contract.changes()
    with pytest.raises(ParameterError) as err:
        call(contract.target)
    assert err.value.name == parameter
    assert contract.changes() == before


# -- one PromQL parser ------------------------------------------------------------------------------------
def test_prometheus_answers_are_read_by_the_one_parser(contract: Contract) -> None:
    t = contract.target
    assert t.prometheus_query("vector(1)") == 1.0
    assert t.prometheus_query("scalar(vector(2))") == 2.0
    assert t.prometheus_query('up{job="no-such-job"}') is None  # no series: no data
    assert t.prometheus_query("vector(0) / 0") is None  # NaN: no data
    two = 'label_replace(vector(1), "x", "a", "", "") or label_replace(vector(2), "x", "b", "", "")'
    with pytest.raises(MetricsError, match="2 series; aggregate it"):
        t.prometheus_query(two)
    with pytest.raises(MetricsError, match="empty PromQL"):
        t.prometheus_query("  ")


# -- status from the level catalog; up adds the required levels -------------------------------------------
def test_status_lists_the_level_catalog_in_order(contract: Contract) -> None:
    t = contract.target
    rows = t.status()
    expected = [(lv.number, c.name) for lv in catalog.LEVELS for c in lv.components]
    assert [(r.level, r.component) for r in rows[: len(expected)]] == expected
    for r, c in zip(rows, catalog.components(), strict=False):
        if not c.runs_on(t.platform):
            assert r.health == "not on this target" and r.detail == c.what_on(t.platform), r
        elif r.health == "not on this target":
            # a cluster that lacks what the catalog's column assumes (the cluster built from Debian
            # packages: no Istio, no Argo CD images) says so, with the reason, never "deployed"
            assert r.detail.startswith("not on this cluster"), r


def test_up_adds_the_levels_the_requested_ones_need(contract: Contract) -> None:
    rows = contract.target.up("1")
    assert {r.level for r in rows} == {0, 1}
    started = contract.levels_started()
    assert not started or started == {0, 1}
    gateway = next(r for r in rows if r.component == GW)
    if contract.target.platform == "local":
        assert gateway.health == "healthy" and gateway.detail == "already up"


# -- the registry: a third target can be registered and selected -----------------------------------------
class _Recorder(Target):
    """The smallest third target: records what it is asked (the base class does the checking)."""

    name = "recorder"
    platform = "local"
    calls: list[tuple[str, Any]] = []

    def _up(self, levels: list[int], progress: Any, **options: Any) -> bool:
        self.calls.append(("up", levels))
        return True

    def down(self, *, purge: bool = False) -> None: ...
    def _observe(self) -> dict[str, Any]: return {}
    def _service_url(self, service: str) -> str: return "http://127.0.0.1:1"
    def _preview_url(self, service: str) -> str: return "http://127.0.0.1:2"
    def _deploy(self, service: str, version: str, track: Any, fault: Any, timeout: float) -> Any:
        self.calls.append(("deploy", (service, version, track)))
    def _retire(self, service: str, track: Any) -> None: ...
    def _set_canary_weight(self, service: str, weight: int) -> None: self.calls.append(("weight", weight))
    def _canary_weight(self, service: str) -> int: return 0
    def _promote(self, service: str) -> Any: ...
    def _abort(self, service: str) -> None: ...
    def _tracks(self, service: str) -> Any: return {}
    def _prometheus_query(self, promql: str) -> dict[str, Any]:
        series = [{"metric": {"i": str(i)}, "value": [0, str(i)]} for i in (3, 4)]
        return {"resultType": "vector", "result": series}


def test_a_third_target_is_registered_selected_and_held_to_the_contract(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown target 'recorder'"):
        Settings(target="recorder")
    register_target("recorder", _Recorder)
    assert "recorder" in target_names()
    settings = Settings.from_env({"CLINOPS_TARGET": "recorder"}, state_dir=tmp_path)
    t = get_target(settings)
    assert isinstance(t, _Recorder) and t.settings.target == "recorder"
    t.up("1")
    t.set_canary_weight(GW, 10)
    assert t.calls == [("up", [0, 1]), ("weight", 10)]
    with pytest.raises(ParameterError):
        t.set_canary_weight(GW, 250)
    with pytest.raises(MetricsError, match="2 series"):
        t.prometheus_query("up")
    register_target("bogus", "json:JSONDecoder")
    with pytest.raises(ConfigError, match="not a Target subclass"):
        get_target(settings, "bogus")
    with pytest.raises(ConfigError, match="target name"):
        register_target("Bad Name", _Recorder)
