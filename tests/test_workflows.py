"""Every GitHub workflow in .github/workflows/: a sound job graph and pinned actions.

A workflow with a ``needs`` on a job that does not exist, or a cycle, is rejected by GitHub
only when it runs; an action on a branch (``@main``) runs whatever that branch holds today.
Both are caught here, for every workflow file including those written by others.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from clinops_lib.config import project_root

pytestmark = pytest.mark.unit

WORKFLOWS = project_root() / ".github" / "workflows"
SHA = re.compile(r"^[0-9a-f]{40}$")
VERSION_TAG = re.compile(r"^v?\d+(\.\d+){0,2}([-+][0-9A-Za-z.]+)?$")


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), f"{path.name}: not a mapping"
    if True in doc and "on" not in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc


def all_uses(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(job, uses) for job-level reusable workflows and every step."""
    out = []
    for job_id, job in (doc.get("jobs") or {}).items():
        if "uses" in job:
            out.append((job_id, str(job["uses"])))
        for step in job.get("steps") or []:
            if "uses" in step:
                out.append((job_id, str(step["uses"])))
    return out


def unpinned(uses: str) -> str | None:
    """Why ``uses`` is not pinned, or None when it is (SHA or version tag; local is fine)."""
    if uses.startswith("./"):
        return None
    if uses.startswith("docker://"):
        image = uses[len("docker://"):]
        if "@sha256:" in image:
            return None
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        return None if tag and tag != "latest" else f"{uses}: docker image without a pinned tag"
    if "@" not in uses:
        return f"{uses}: no ref at all"
    ref = uses.rsplit("@", 1)[1]
    if SHA.match(ref) or VERSION_TAG.match(ref):
        return None
    return f"{uses}: ref {ref!r} is a branch or moving name, not a version tag or commit SHA"


def graph_problems(doc: dict[str, Any]) -> list[str]:
    jobs = doc.get("jobs") or {}
    problems = []
    needs: dict[str, list[str]] = {}
    for job_id, job in jobs.items():
        n = job.get("needs") or []
        needs[job_id] = [n] if isinstance(n, str) else list(n)
        for dep in needs[job_id]:
            if dep not in jobs:
                problems.append(f"job {job_id!r} needs {dep!r}, which does not exist")
    # cycle detection (DFS with colours)
    state: dict[str, int] = {}

    def visit(j: str, path: list[str]) -> None:
        state[j] = 1
        for dep in needs.get(j, []):
            if dep not in jobs:
                continue
            if state.get(dep) == 1:
                problems.append("cycle: " + " -> ".join([*path, j, dep]))
            elif state.get(dep) is None:
                visit(dep, [*path, j])
        state[j] = 2

    for j in jobs:
        if state.get(j) is None:
            visit(j, [])
    return problems


WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))


def test_the_expected_workflows_exist() -> None:
    names = {p.name for p in WORKFLOW_FILES}
    assert {"deployment-tests.yml", "cd.yml", "security-scan.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_job_graph_is_sound(path: Path) -> None:
    doc = load(path)
    assert doc.get("jobs"), f"{path.name}: no jobs"
    assert doc.get("on"), f"{path.name}: no triggers"
    assert graph_problems(doc) == [], path.name
    for job_id, job in doc["jobs"].items():
        assert "runs-on" in job or "uses" in job, f"{path.name}: job {job_id} has neither runs-on nor uses"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_is_pinned(path: Path) -> None:
    doc = load(path)
    bad = [f"{job}: {why}" for job, uses in all_uses(doc) if (why := unpinned(uses))]
    assert bad == [], f"{path.name}: " + "; ".join(bad)


def test_the_checks_catch_what_they_claim_to() -> None:
    broken = {"on": "push", "jobs": {
        "a": {"runs-on": "x", "needs": ["c"], "steps": [{"uses": "actions/checkout@main"}]},
        "b": {"runs-on": "x", "needs": "ghost"},
        "c": {"runs-on": "x", "needs": ["a"], "steps": [{"uses": "foo/bar"}, {"uses": "docker://alpine"}]},
    }}
    problems = graph_problems(broken)
    assert "job 'b' needs 'ghost', which does not exist" in problems
    assert any(p.startswith("cycle: ") and "a" in p and "c" in p for p in problems)
    reasons = [unpinned(u) for _, u in all_uses(broken)]
    assert all(reasons), reasons
    assert "branch" in str(reasons[0])
    for ok in ("actions/checkout@v4.2.2", "helm/kind-action@a1b0e391336a6ee6713a0583f8c6240d70863de3",
               "snyk/actions/python@0.4.0", "./.github/actions/x", "docker://alpine:3.20"):
        assert unpinned(ok) is None, ok


def _runs(doc: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for j in doc["jobs"].values() for s in j.get("steps") or [])


def test_deployment_tests_run_the_four_runbooks_on_kind_and_keep_the_evidence() -> None:
    doc = load(WORKFLOWS / "deployment-tests.yml")
    uses = [u for _, u in all_uses(doc)]
    assert any(u.startswith("helm/kind-action@") for u in uses)
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    runs = _runs(doc)
    assert "clinops kind install-stack" in runs
    for rb in ("00-provision", "01-deploy-levels", "02-canary-drill", "03-blue-green-drill"):
        assert re.search(rf"clinops run runbooks/{rb}\.ipynb --target kind", runs), rb
    kind_step = next(s for j in doc["jobs"].values() for s in j.get("steps") or []
                     if str(s.get("uses", "")).startswith("helm/kind-action@"))
    assert kind_step["with"]["config"] == "kind/kind-config.yaml"


def test_cd_promotes_through_a_pull_request_on_the_values_file() -> None:
    doc = load(WORKFLOWS / "cd.yml")
    uses = [u for _, u in all_uses(doc)]
    assert any(u.startswith("peter-evans/create-pull-request@") for u in uses)
    assert "values-{env}.yaml" in _runs(doc)
    envs = doc["on"]["workflow_dispatch"]["inputs"]["environment"]["options"]
    assert set(envs) == {"dev", "staging", "prod"}


def test_security_scan_runs_every_scanner() -> None:
    doc = load(WORKFLOWS / "security-scan.yml")
    text = _runs(doc) + "\n" + "\n".join(u for _, u in all_uses(doc))
    scanners = ("checkov", "pip-audit", "bandit", "hadolint", "aquasecurity/trivy-action@", "snyk/actions/")
    for scanner in scanners:
        assert scanner in text, scanner
    assert set(doc["jobs"]["summary"]["needs"]) == set(doc["jobs"]) - {"summary"}


def _steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps") or [] if str(s.get("uses", "")).startswith(action)]


def test_ci_pushes_the_evidence_the_e2e_tier_sealed_without_running_the_runbooks_again() -> None:
    doc = load(WORKFLOWS / "ci.yml")
    jobs = doc["jobs"]
    suite = next(s for s in jobs["tests"]["steps"] if "scripts/test.sh" in str(s.get("run", "")))
    archive = suite["env"]["CLINOPS_E2E_ARCHIVE"]
    kept = _steps_using(jobs["tests"], "actions/upload-artifact@")
    assert kept and kept[0]["if"] == "always()", kept
    assert archive.endswith(kept[0]["with"]["path"].rstrip("/")), (archive, kept)
    runbooks = jobs["runbooks"]
    assert "tests" in runbooks["needs"]
    fetched = _steps_using(runbooks, "actions/download-artifact@")
    assert fetched and fetched[0]["with"]["name"] == kept[0]["with"]["name"], fetched
    runs = "\n".join(str(s.get("run", "")) for s in runbooks["steps"])
    assert "clinops run " not in runs, "the runbooks job must not run the runbooks a second time"
    assert "clinops evidence push evidence" in runs and "clinops evidence verify evidence --remote" in runs
    assert runs.index("clinops inventory apply") < runs.index("clinops evidence push")
