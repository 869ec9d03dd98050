"""The runbooks end to end, exactly as an operator runs them: ``clinops`` in a subprocess.

One local platform for the whole module (a port block from the harness, state and evidence under a
tmp dir), then in order: provision, deploy levels, a canary drill that promotes, a canary drill
with injected errors that must abort, a blue-green drill -- each exits 0 and seals a PASSED
bundle that verifies; the archive chains all five. Bad input exits 2 with nothing run;
``--target kind`` on a machine without docker/kind exits 1 with a FAILED bundle naming what is
missing. Each runbook runs once per suite (a module fixture; the tests read its results, so
none depends on another having run first). Last, ``clinops down`` must leave no process and no
listening port of the block behind; the module finalizer runs it again even when a test failed,
so nothing outlives the module. ``CLINOPS_E2E_ARCHIVE`` keeps the sealed bundles (CI uploads
them instead of running the runbooks a second time).

Why subprocesses and not ``cli.main`` in-process: the runner sets environment variables for the
kernel, the local target reaps its own children, and ``clinops down`` must work from a process
that did not start anything -- all of which an in-process call would blur.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import drills_lock, enterable_tmpdir, processes_of
from ports import PortAllocator

# Not marked ``drills``: provisioning runs beside other tests; the ``runs`` fixture holds the drills
# lock around the runbooks in LOCKED_RUNBOOKS alone.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "runbooks"
CLINOPS = [sys.executable, "-m", "clinops_lib.cli"]
#: Outer bound for one subprocess so a hung run fails this module instead of CI's whole job.
#: Not a performance limit: the drills take minutes on a loaded machine.
SUBPROCESS_TIMEOUT_S = 3600

# (test id, runbook file, -p parameters, what the parameters must read back as)
SEQUENCE = [
    ("00-provision", "00-provision.ipynb", [], {}),
    ("01-deploy-levels", "01-deploy-levels.ipynb", [], {}),
    ("02-canary-promoted", "02-canary-drill.ipynb", [], {}),
    (
        "02-canary-aborted",
        "02-canary-drill.ipynb",
        [("fault", "errors:5%"), ("expect", "aborted")],
        {"fault": "errors:5%", "expect": "aborted"},
    ),
    ("03-blue-green", "03-blue-green-drill.ipynb", [], {}),
]


#: The runbooks of the sequence that hold conftest.drills_lock: the drills (never two at once), and
#: 01, whose pipeline DAG (Spark, Feast, training) starves a drill beside it: run unlocked, it left
#: the cluster tier's clean canary drill's load generator at 95 % of its rate (the drill's own
#: validity check wants 98 %).
LOCKED_RUNBOOKS = frozenset({"01-deploy-levels.ipynb", "02-canary-drill.ipynb", "03-blue-green-drill.ipynb"})


# -- helpers --------------------------------------------------------------------------------------
@dataclass
class Platform:
    """The module's environment: where state and evidence go, and the variables every call gets."""

    tmp: Path
    env: dict[str, str]
    state_dir: Path
    archive: Path
    timings: dict[str, float]
    ports: range


def _require(name: str) -> Path:
    path = RUNBOOKS / name
    assert path.is_file(), f"runbooks/{name} is missing"  # every runbook exists now: no skip
    return path


def _clinops(platform: Platform, *args: str, label: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI from the repository root (so ``runbooks/...`` paths work as in the README)."""
    start = time.monotonic()
    proc = subprocess.run(
        [*CLINOPS, *args],
        cwd=ROOT,
        env=platform.env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    if label:
        platform.timings[label] = time.monotonic() - start
    return proc


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def _bundle_of(proc: subprocess.CompletedProcess[str]) -> Path:
    match = re.search(r"^bundle: (.+)$", proc.stdout, re.M)
    assert match, f"no 'bundle:' line in the output of clinops run\n{_explain(proc)}"
    return Path(match.group(1).strip())


def _bundles(archive: Path) -> list[Path]:
    return sorted(p.parent for p in archive.glob("*/*/manifest.json"))


def _listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this machine (IPv4 and IPv6), read from /proc."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # 0A = TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _block_listeners(block: range) -> list[int]:
    return sorted(p for p in _listening_ports() if p in block)


def _down(platform: Platform) -> subprocess.CompletedProcess[str]:
    return _clinops(platform, "down", "--target", "local", label="down")


# -- the platform -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def platform(port_allocator: PortAllocator, request: pytest.FixtureRequest) -> Iterator[Platform]:
    failed_before = request.session.testsfailed
    block = port_allocator.block()  # free and locked: nothing else listens there
    tmp = enterable_tmpdir("clinops-e2e-")
    archive = Path(os.environ.get("CLINOPS_E2E_ARCHIVE") or tmp / "evidence").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINOPS_", "KUBECONFIG"))}
    env.update(
        CLINOPS_PORT_BASE=str(block.base),
        CLINOPS_STATE_DIR=str(tmp / "state"),
        CLINOPS_EVIDENCE_DIR=str(archive),
        # no kubeconfig at all: --target kind must find neither a cluster nor docker/kind
        KUBECONFIG=str(tmp / "no-kubeconfig"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    p = Platform(tmp, env, tmp / "state", archive, {}, block.ports)
    try:
        yield p
    finally:
        # runs even when a test failed half-way: nothing may outlive the module
        proc = _down(p)
        leftovers = processes_of(p.state_dir)
        listeners = _block_listeners(p.ports)
        port_allocator.release(block)
        timings = ", ".join(f"{k} {v:.0f}s" for k, v in p.timings.items())
        print(f"\n[e2e timings] {timings}", file=sys.stderr)
        if request.session.testsfailed > failed_before:
            # a runbook failed: its components' logs (state/logs/*.log) are the first thing to read
            print(f"[e2e] a test failed: state, logs and evidence kept in {tmp}", file=sys.stderr)
        elif proc.returncode == 0 and not leftovers:
            shutil.rmtree(tmp, ignore_errors=True)
        if proc.returncode != 0 or leftovers or listeners:
            pytest.fail(
                f"final `clinops down` did not clean up: {_explain(proc)}\n"
                f"processes left: {leftovers}\nlisteners left in block: {listeners}"
            )


@dataclass
class Snapshot:
    """The runbooks directory before anything ran: which notebooks are clean, which other files exist."""

    clean: list[str]
    others: set[str]


def _is_clean(nb: Path) -> bool:
    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    return not any(c.get("outputs") or c.get("execution_count") is not None for c in cells)


def _assert_runbooks_untouched(before: Snapshot) -> None:
    """No outputs written back into a committed (clean) runbook, no files left next to them.

    Content digests would be wrong here: other engineers may edit their runbooks in this
    checkout while the module runs. Outputs or new files are what a run would leave.
    """
    dirty = [n for n in before.clean if (RUNBOOKS / n).is_file() and not _is_clean(RUNBOOKS / n)]
    assert not dirty, f"runbooks {dirty} have outputs/execution counts now: a run wrote back into them"
    others = {p.name for p in RUNBOOKS.iterdir() if p.suffix != ".ipynb"}
    assert others <= before.others, f"a run left files in runbooks/: {sorted(others - before.others)}"


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    notebooks = sorted(RUNBOOKS.glob("*.ipynb"))
    return Snapshot([n.name for n in notebooks if _is_clean(n)],
                    {p.name for p in RUNBOOKS.iterdir() if p.suffix != ".ipynb"})


# -- bad input: nothing runs, nothing is written --------------------------------------------------------
def test_bad_parameter_exits_2_naming_it_with_nothing_run(platform: Platform) -> None:
    _require("02-canary-drill.ipynb")
    before, processes = _bundles(platform.archive), processes_of(platform.state_dir)
    proc = _clinops(platform, "run", "runbooks/02-canary-drill.ipynb", "-p", "steps", "[50, 10]")
    assert proc.returncode == 2, _explain(proc)
    assert "steps" in proc.stderr, _explain(proc)
    assert "verdict:" not in proc.stdout, _explain(proc)
    assert _bundles(platform.archive) == before, "a rejected run must not write a bundle"
    assert processes_of(platform.state_dir) == processes, "a rejected run must not start anything"


# -- the sequence ------------------------------------------------------------------------------------
@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    new_bundles: set[Path]


@pytest.fixture(scope="module")
def runs(platform: Platform, snapshot: Snapshot) -> dict[str, Run]:
    """Every runbook of the sequence, run once per suite (the tests below only read the results):
    no test depends on another having run first, and no runbook runs twice."""
    done: dict[str, Run] = {}
    for run_id, runbook, params, _ in SEQUENCE:
        _require(runbook)
        before = set(_bundles(platform.archive))
        flags = [x for name, value in params for x in ("-p", name, value)]
        with drills_lock() if runbook in LOCKED_RUNBOOKS else contextlib.nullcontext():
            proc = _clinops(platform, "run", f"runbooks/{runbook}", "--no-progress", *flags, label=run_id)
        done[run_id] = Run(proc, set(_bundles(platform.archive)) - before)
    return done


@pytest.mark.parametrize(("runbook", "expected"), [pytest.param(f, e, id=i) for i, f, _, e in SEQUENCE])
def test_runbook_passes_with_a_verified_bundle(
    platform: Platform, snapshot: Snapshot, runs: dict[str, Run], runbook: str,
    expected: dict[str, str], request: pytest.FixtureRequest,
) -> None:
    run = runs[request.node.callspec.id]
    proc = run.proc
    assert proc.returncode == 0, _explain(proc)
    assert re.search(r"^verdict: PASSED$", proc.stdout, re.M), _explain(proc)

    bundle = _bundle_of(proc)
    assert run.new_bundles == {bundle}, "exactly one new bundle, the one printed"
    verdict = json.loads((bundle / "verdict.json").read_text())
    assert verdict["verdict"] == "PASSED", verdict["reasons"]
    assert verdict["checks"], "a runbook that passes must have recorded acceptance checks"
    assert all(c["passed"] for c in verdict["checks"])
    record = json.loads((bundle / "run-record.json").read_text())
    assert (record["runbook"], record["target"]) == (Path(runbook).stem, "local")
    values = json.loads((bundle / "parameters.json").read_text())["values"]
    for name, value in expected.items():
        assert values[name] == value, f"parameter {name} reached the run as {values[name]!r}"

    verify = _clinops(platform, "evidence", "verify", str(bundle))
    assert verify.returncode == 0 and verify.stdout.startswith("OK: 1 bundle"), _explain(verify)
    listed = _clinops(platform, "evidence", "list")
    assert listed.returncode == 0, _explain(listed)
    rel = bundle.relative_to(platform.archive).as_posix()
    line = next((ln for ln in listed.stdout.splitlines() if ln.rstrip().endswith(rel)), None)
    assert line is not None, f"`clinops evidence list` does not show {rel}\n{listed.stdout}"
    assert line.split()[:1] == [Path(runbook).stem] and " local " in line and " PASSED " in line, line
    _assert_runbooks_untouched(snapshot)


def test_deploy_levels_keeps_the_data_quality_validation_of_its_dag_run(runs: dict[str, Run]) -> None:
    """Issue 14 (Level 2): runbook 01's DAG run went through the data-quality gate; its bundle keeps
    great-expectations' validation result whole and one row per expectation, every one met, and the
    component table shows the gate deployed (healthy), not "not on this target"."""
    import csv

    bundle = _bundle_of(runs["01-deploy-levels"].proc)
    doc = json.loads((bundle / "data" / "data-quality-validation.json").read_text())
    assert set(doc["results"]) == {"clean_observations", "subject_features"}
    results = doc["results"].values()
    assert all(r["success"] and r["statistics"]["unsuccessful_expectations"] == 0 for r in results)
    assert all(o["sha256"] and o["rows"] > 0 for o in doc["objects"]), doc["objects"]
    with (bundle / "data" / "data-quality-expectations.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    evaluated = sum(r["statistics"]["evaluated_expectations"] for r in doc["results"].values())
    assert len(rows) == evaluated and all(r["success"] == "True" for r in rows)
    with (bundle / "data" / "components.csv").open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["component"] == "data-quality (great-expectations)")
    assert row["health"] == "healthy", row
    with (bundle / "data" / "dag-run-tasks.csv").open(newline="") as f:
        tasks = {r["task"]: r["state"] for r in csv.DictReader(f)}
    assert tasks.get("data_quality") == "success", tasks


def _canary_alert_rows(run: Run) -> tuple[list[dict[str, str]], dict[str, object]]:
    import csv

    bundle = _bundle_of(run.proc)
    table = bundle / "data" / "alertmanager-canary-alerts.csv"
    assert table.is_file(), f"{table.name} missing from {bundle.name}: no Alertmanager evidence kept"
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((bundle / "verdict.json").read_text())


def test_failed_canary_drill_shows_the_canary_alert_as_alertmanager_saw_it(runs: dict[str, Run]) -> None:
    """Issue 14 (Level 6): the aborted drill (errors:5 %, the rule's threshold is 2 %) raised
    ClinopsCanaryHighErrorRate for its canary, read back from the real Alertmanager during the drill
    and sealed in the bundle; the runbook's own acceptance check on it passed."""
    rows, verdict = _canary_alert_rows(runs["02-canary-aborted"])
    assert rows, "Alertmanager held no canary alert during a drill with 5 % errors"
    for row in rows:
        assert row["alert"] == "ClinopsCanaryHighErrorRate", row
        assert (row["service"], row["severity"]) == ("clinical-gateway", "critical"), row
        assert "-drill" in row["version"], f"the alert names {row['version']!r}, not the drill's canary"
        assert row["state"] in {"active", "suppressed"}, row
    checks: list[dict[str, object]] = verdict["checks"]  # type: ignore[assignment]
    held = [c for c in checks if str(c["name"]).startswith("canary alerts held by Alertmanager")]
    assert len(held) == 1 and held[0]["passed"], checks


def test_clean_canary_drill_raises_no_canary_alert(runs: dict[str, Run]) -> None:
    """The control: the promoted drill (no fault) leaves the same table empty, so the table above is
    the canary's errors, not something every drill shows."""
    rows, _ = _canary_alert_rows(runs["02-canary-promoted"])
    assert rows == [], rows


def test_archive_chains_every_run(platform: Platform, runs: dict[str, Run]) -> None:
    bundles = _bundles(platform.archive)
    assert len(bundles) == len(SEQUENCE), [b.name for b in bundles]
    proc = _clinops(platform, "evidence", "verify", str(platform.archive))
    assert proc.returncode == 0, _explain(proc)
    assert proc.stdout.startswith(f"OK: {len(SEQUENCE)} bundle(s) intact"), proc.stdout
    listed = _clinops(platform, "evidence", "list").stdout.splitlines()
    assert [ln.split()[0] for ln in listed] == [Path(f).stem for _, f, _, _ in SEQUENCE], listed
    assert all(" PASSED " in ln for ln in listed), listed


#: every runbook without a kubeconfig; ``kind`` (the same target-selection code, a different
#: prerequisite message) on the first runbook only: each case is a kernel start (~9 s)
NO_CLUSTER_CASES = [(f, "kubeconfig") for f in dict.fromkeys(f for _, f, _, _ in SEQUENCE)]
NO_CLUSTER_CASES.insert(0, (SEQUENCE[0][1], "kind"))


@pytest.mark.parametrize(("runbook", "target"), NO_CLUSTER_CASES)
def test_kubernetes_target_without_a_cluster_fails_with_evidence(platform: Platform, runbook: str,
                                                                 target: str) -> None:
    """No docker/kind and no kubeconfig here: every runbook fails at target selection, sealed as FAILED."""
    _require(runbook)
    other = platform.tmp / f"{target}-evidence"
    main_archive = _bundles(platform.archive)
    proc = _clinops(platform, "run", f"runbooks/{runbook}", "--target", target, "--no-progress",
                    "--out", str(other), label=f"{target}-prerequisite-{Path(runbook).stem}")
    assert proc.returncode == 1, _explain(proc)
    assert re.search(r"^verdict: FAILED$", proc.stdout, re.M), _explain(proc)
    bundle = _bundle_of(proc)
    assert bundle.parent.parent == other
    verdict = json.loads((bundle / "verdict.json").read_text())
    assert verdict["verdict"] == "FAILED"
    assert verdict["failed_cell"]["ename"] == "PrerequisiteError", verdict["failed_cell"]
    why = " ".join(verdict["reasons"])
    if target == "kind":
        assert "docker" in why and "kind" in why, why
    else:
        assert "kubeconfig" in why, why
    assert "--target local" in why or "target local" in why or "local target" in why, why
    assert json.loads((bundle / "run-record.json").read_text())["target"] == target
    verify = _clinops(platform, "evidence", "verify", str(other))
    assert verify.returncode == 0, _explain(verify)
    assert _bundles(platform.archive) == main_archive, "--out must keep the run out of the main archive"


# -- down: nothing left ----------------------------------------------------------------------------------
def test_down_leaves_no_process_and_no_listener(platform: Platform, runs: dict[str, Run]) -> None:
    assert processes_of(platform.state_dir), "the runs left the platform up (their runbooks bring it up)"
    proc = _down(platform)
    assert proc.returncode == 0, _explain(proc)
    assert processes_of(platform.state_dir) == []
    assert _block_listeners(platform.ports) == []
