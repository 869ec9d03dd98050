"""The runbooks with ``--target kubeconfig`` against the real cluster, headlessly (issue 13, point 6).

``clinops run <runbook> --target kubeconfig`` in a subprocess, exactly as an operator runs it with
``KUBECONFIG`` pointing at the tier's cluster. On that cluster the target reads the cluster's own
facts (``kube-public/clinops-cluster``): the ``local-cluster`` chart profile, Level 0 and
Prometheus from the host (the local target's, on this module's port block, relayed onto the pod
bridge), images imported into containerd. Each runbook must exit 0 with a PASSED bundle that
verifies and that names the cluster, its Kubernetes version and the traffic mode it ran on. The
module ends with ``clinops down --target kubeconfig``: the level releases uninstalled, the host's
processes and relays stopped (none left with this module's state dir, no listener on its block).

Runbooks run in sequence (each leaves the platform up for the next, as the README says), so each
test needs the ones before it; a module fixture runs them once and the tests read the results.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import enterable_tmpdir, processes_of
from ports import PortAllocator

from clinops_lib.clusters.debian import DebianCluster

# Provisioning runs beside other tests; deploying the levels (pods starting, the training job) and
# the three drills are marked ``drills`` (conftest.DRILLS_LOCK: no drill beside a drill or beside
# heavy work on this machine).
pytestmark = [pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent.parent
CLINOPS = [sys.executable, "-m", "clinops_lib.cli"]
#: outer bound of one subprocess (not a performance limit: a drill takes minutes on a loaded machine)
SUBPROCESS_TIMEOUT_S = 3600


@dataclass
class Runs:
    env: dict[str, str]
    tmp: Path
    state_dir: Path
    block: range
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _clinops(runs: Runs, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLINOPS, *args], cwd=ROOT, env=runs.env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def runs(debian_cluster: DebianCluster, port_allocator: PortAllocator) -> Iterator[Runs]:
    block = port_allocator.block()
    tmp = enterable_tmpdir("clinops-cluster-runbooks-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINOPS_", "KUBECONFIG"))}
    env.update(CLINOPS_PORT_BASE=str(block.base), CLINOPS_STATE_DIR=str(tmp / "state"),
               CLINOPS_EVIDENCE_DIR=str(tmp / "evidence"), KUBECONFIG=str(debian_cluster.kubeconfig),
               PYTHONDONTWRITEBYTECODE="1")
    if os.environ.get("CLINOPS_CACHE_DIR"):
        env["CLINOPS_CACHE_DIR"] = os.environ["CLINOPS_CACHE_DIR"]
    r = Runs(env, tmp, tmp / "state", block.ports)
    try:
        yield r
    finally:
        down = _clinops(r, "down", "--target", "kubeconfig")
        left = processes_of(r.state_dir)
        port_allocator.release(block)
        print(f"\n[cluster runbooks] seconds: {r.seconds}", file=sys.stderr)
        failed = [k for k, p in r.results.items() if p.returncode != 0]
        # CLINOPS_KEEP_TEST_STATE=1 keeps a passing module's evidence too (to study the drills)
        keep = os.environ.get("CLINOPS_KEEP_TEST_STATE") == "1"
        if down.returncode == 0 and not left and not failed and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"[cluster runbooks] state, logs and evidence kept in {tmp}", file=sys.stderr)
        assert down.returncode == 0, f"clinops down --target kubeconfig failed: {_explain(down)}"
        assert left == [], f"processes of the module's platform left after down: {left}"


def _run(runs: Runs, key: str, runbook: str, *params: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    if key not in runs.results:
        args = ["run", f"runbooks/{runbook}", "--target", "kubeconfig", "--no-progress"]
        for name, value in params:
            args += ["-p", name, value]
        t0 = time.monotonic()
        runs.results[key] = _clinops(runs, *args)
        runs.seconds[key] = round(time.monotonic() - t0, 1)
    return runs.results[key]


def _passed_bundle(runs: Runs, proc: subprocess.CompletedProcess[str]) -> Path:
    assert proc.returncode == 0, _explain(proc)
    match = re.search(r"^bundle: (.+)$", proc.stdout, re.M)
    assert match, _explain(proc)
    bundle = Path(match.group(1).strip())
    assert "verdict: PASSED" in proc.stdout, _explain(proc)
    verify = _clinops(runs, "evidence", "verify", str(bundle))
    assert verify.returncode == 0, _explain(verify)
    with open(bundle / "data" / "target.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["target"], row["provider"], row["kubernetes_version"]) == ("kubeconfig", "debian", "v1.20.2")
    assert row["chart_profile"] == "local-cluster" and "basic canary" in row["traffic_mode"]
    # the metrics came through the host Prometheus' kubernetes_sd job (the only way it sees pods)
    assert "kubernetes_sd_configs (role pod, job kubernetes-pods)" in row["metrics"], row["metrics"]
    print(f"[cluster runbooks] {bundle.parent.name} metrics: {row['metrics']}", file=sys.stderr)
    return bundle


def _pods_scraped(bundle: Path) -> tuple[int, int]:
    """(up, discovered) pods of the kubernetes_sd job, as the bundle's target row says."""
    with open(bundle / "data" / "target.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    found = re.search(r"(\d+)/(\d+) discovered pods up", row["metrics"])
    assert found, row["metrics"]
    return int(found.group(1)), int(found.group(2))


def _table(bundle: Path, name: str) -> list[dict[str, str]]:
    with open(bundle / "data" / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_provision_brings_level_0_up_from_the_host_and_applies_the_inventory(runs: Runs) -> None:
    bundle = _passed_bundle(runs, _run(runs, "00", "00-provision.ipynb"))
    rows = {r["component"]: r for r in _table(bundle, "level0-components")}
    for name in ("postgresql", "redis", "localstack"):
        assert rows[name]["health"] == "healthy" and "(host, relay up)" in rows[name]["endpoint"], rows[name]
    assert rows["kubernetes"]["health"] == "healthy"
    assert rows["haproxy"]["detail"].startswith("not on this cluster"), rows["haproxy"]


@pytest.mark.drills
def test_deploy_levels_installs_a_release_per_level_and_reports_what_is_not_on_this_cluster(
    runs: Runs,
) -> None:
    _passed_bundle(runs, _run(runs, "00", "00-provision.ipynb"))
    bundle = _passed_bundle(runs, _run(runs, "01", "01-deploy-levels.ipynb"))
    rows = {r["component"]: r for r in _table(bundle, "components")}
    assert rows["clinical-gateway"]["health"] == "healthy", rows["clinical-gateway"]
    assert rows["model-serving"]["health"] == "healthy", rows["model-serving"]
    assert rows["training-job"]["health"] == "healthy", rows["training-job"]
    off = [r for r in rows.values() if r["why not here"].startswith("not on this cluster")]
    named = {r["component"] for r in off}
    assert {"data-ingestion/kafka", "ml-pipeline/mlflow", "orchestration/airflow"} <= named
    assert all(r["health"] == "not on this target" for r in off)


def _deployed(runs: Runs) -> None:
    _passed_bundle(runs, _run(runs, "00", "00-provision.ipynb"))
    _passed_bundle(runs, _run(runs, "01", "01-deploy-levels.ipynb"))


def _events(bundle: Path) -> list[dict[str, str]]:
    return _table(bundle, "drill-events")


@pytest.mark.drills
def test_a_clean_canary_is_promoted_with_the_replica_shares_measured(runs: Runs) -> None:
    _deployed(runs)
    bundle = _passed_bundle(runs, _run(runs, "02-clean", "02-canary-drill.ipynb"))
    assert any(e["kind"] == "decision" and e["detail"].startswith("PROMOTED") for e in _events(bundle))
    up, _ = _pods_scraped(bundle)
    assert up >= 2, "the host Prometheus scraped fewer pods than the two online services have"
    # kube-proxy balances per connection, the load generator opens one per request: the realised
    # canary share of each judged interval is the replica share within sampling error
    for iv in _table(bundle, "analysis-intervals"):
        weight, share, n = int(iv["weight"]), iv["canary_share"], int(iv["canary_requests"]) + int(
            iv["stable_requests"])
        if share and 0 < weight < 100 and n >= 100:
            p = weight / 100
            assert abs(float(share) - p) <= 4 * (p * (1 - p) / n) ** 0.5, iv


@pytest.mark.drills
def test_a_canary_with_5_percent_errors_is_aborted_by_the_judge_through_the_rollouts_api(runs: Runs) -> None:
    _deployed(runs)
    _passed_bundle(runs, _run(runs, "02-clean", "02-canary-drill.ipynb"))
    bundle = _passed_bundle(runs, _run(runs, "02-errors", "02-canary-drill.ipynb", ("fault", "errors:5%"),
                                       ("expect", "aborted")))
    events = _events(bundle)
    assert any(e["kind"] == "decision" and "anytime-valid judge" in e["detail"] for e in events), events
    # the in-cluster analysis is in the bundle too: the Rollout's AnalysisRuns as the controller left them
    runs_table = _table(bundle, "in-cluster-analysis")
    assert runs_table and {"analysis_run", "run_phase", "metric_phase"} <= set(runs_table[0])


@pytest.mark.drills
def test_blue_green_switches_and_the_rollback_drill_lose_no_request(runs: Runs) -> None:
    """Promotion, then the rollback drill on the real controller: back to blue while its ReplicaSet
    is inside scaleDownDelaySeconds (fast-tracked: no pause, no analysis) and forward again; every
    switch done only once kube-proxy's rules no longer reach the old pods."""
    _deployed(runs)
    bundle = _passed_bundle(runs, _run(runs, "03", "03-blue-green-drill.ipynb"))
    switches = {row["switch"]: row for row in _table(bundle, "switches")}
    assert list(switches) == ["promotion", "rollback", "roll-forward"], switches
    for row in switches.values():
        assert row["failed around switch"] == "0" and int(row["requests around switch"]) > 0, row
