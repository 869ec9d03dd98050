"""Levels as data: every level present, local components, parsing, and status rows with
"not on this target" (no processes needed: an empty state dir)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from ports import PortBlock

from clinops_lib import catalog
from clinops_lib.cli.platform import format_table, status_from_cli
from clinops_lib.config import Settings
from clinops_lib.exceptions import ParameterError
from clinops_lib.targets.local.target import LocalTarget

pytestmark = pytest.mark.unit


def test_levels_zero_to_six_in_order() -> None:
    assert [lv.number for lv in catalog.LEVELS] == list(range(7))
    names = [c.name for c in catalog.components()]
    assert len(names) == len(set(names)), "component names must be unique"


def test_what_runs_locally() -> None:
    local = {c.name for c in catalog.components() if c.runs_on("local")}
    assert local == {"postgresql", "redis", "localstack", "haproxy", "clinical-gateway", "kafka",
                     "kafka-consumer", "debezium-cdc", "spark", "data-quality (great-expectations)", "feast",
                     "training-job", "model-serving", "mlflow", "airflow",
                     "prometheus", "alertmanager"}
    for name in ("grafana", "opensearch", "argo-cd"):
        c = catalog.component(name)
        assert not c.runs_on("local") and c.what_on("local").startswith("not on this target: ")
    # every component the local target does not run says why (the runbook's row shows it)
    for c in catalog.components():
        if not c.runs_on("local"):
            assert len(c.what_on("local")) > len("not on this target: ") + 20, c.name
    kube = catalog.component("kubernetes")
    assert kube.runs_on("kind") and not kube.runs_on("local")


def test_parse_levels() -> None:
    assert catalog.parse_levels("4, 0,1") == [0, 1, 4]
    assert catalog.parse_levels(None) == list(range(7))
    assert catalog.parse_levels([6, 6]) == [6]
    with pytest.raises(ParameterError, match="level 9 does not exist"):
        catalog.parse_levels("0,9")
    with pytest.raises(ParameterError, match="'x' is not a level"):
        catalog.parse_levels("0,x")


def test_resolve_levels_adds_dependencies() -> None:
    assert catalog.resolve_levels([1]) == [0, 1]
    assert catalog.resolve_levels([4, 6]) == [0, 4, 6]
    assert catalog.resolve_levels([6]) == [6]


def test_status_lists_every_component_without_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], port_block: PortBlock
) -> None:
    settings = Settings(state_dir=tmp_path / "state", ports=port_block.portmap())
    rows = LocalTarget(settings).status()
    assert [r.component for r in rows] == [c.name for c in catalog.components()]
    by_name = {r.component: r for r in rows}
    assert by_name["grafana"].health == "not on this target"
    assert by_name["spark"].health == "stopped"  # a batch job is not "deployed" before `up`
    assert by_name["data-quality (great-expectations)"].health == "stopped"
    assert by_name["postgresql"].health == "stopped"  # nothing was started: never shown as deployed
    assert not any(r.health == "healthy" for r in rows)
    table = format_table(rows)
    assert "not on this target" in table and "1 data ingestion" in table
    status_from_cli(argparse.Namespace(json=True), settings)
    data = json.loads(capsys.readouterr().out)
    assert {d["component"] for d in data["components"]} >= {"grafana", "clinical-gateway"}
    # every track of every service, with its weight (unreadable here: nothing runs, and it says so)
    tracks = {(t["service"], t["track"]): t for t in data["tracks"]}
    services, track_names = ("clinical-gateway", "model-serving"), ("stable", "canary")
    assert set(tracks) == {(s, t) for s in services for t in track_names}
    assert all(t["weight"] is None and "unreadable" in t["note"] and not t["running"]
               for t in tracks.values())
