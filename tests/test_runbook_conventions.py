"""Every runbook under runbooks/ follows the conventions the runner and auditors rely on.

* committed without outputs or execution counts (the evidence is the *executed* copy);
* first cell markdown naming Purpose, Preconditions, Acceptance criteria and Rollback;
* exactly one ``parameters`` cell whose every line is a declaration (params.py parses it);
* a ``target`` parameter, when present, declared ``# one of: local, kind, kubeconfig``;
* acceptance checks recorded and ``record.require_all_checks()`` at the end;
* no secret-looking literals; kernelspec ``clinops``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import write_notebook

from clinops_lib.evidence.secretgate import SecretGate
from clinops_lib.exceptions import ParameterError
from clinops_lib.runs import params as P

pytestmark = pytest.mark.unit

RUNBOOKS = sorted((Path(__file__).resolve().parent.parent / "runbooks").glob("*.ipynb"))
SECTIONS = ("Purpose", "Preconditions", "Acceptance criteria", "Rollback")
# a credential-named variable assigned a non-empty string literal
SECRET_ASSIGN = re.compile(
    r"(?im)^\s*\w*(password|passwd|token|api_key|secret_key|secret_access_key|private_key)\w*\s*=\s*"
    r"(['\"])(?!\2)[^'\"]+\2"
)


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def convention_problems(nb: Any) -> list[str]:
    """Every way ``nb`` breaks the runbook conventions (empty when it follows them)."""
    problems: list[str] = []
    cells = nb.get("cells", [])
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "clinops":
        problems.append("kernelspec name is not 'clinops'")
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                problems.append(f"cell {i} has outputs")
            if cell.get("execution_count") is not None:
                problems.append(f"cell {i} has an execution count")
    if not cells or cells[0].get("cell_type") != "markdown":
        problems.append("first cell is not markdown")
    else:
        missing = [s for s in SECTIONS if s.lower() not in _source(cells[0]).lower()]
        if missing:
            problems.append(f"first cell does not mention: {', '.join(missing)}")
    try:
        index = P.find_parameters_cell(nb)
        if index is None:
            problems.append("no cell is tagged 'parameters'")
        else:
            decls = P.parse_declarations(_source(cells[index]))
            target = decls.get("target")
            if target is not None and set(target.choices) != {"local", "kind", "kubeconfig"}:
                problems.append("parameter 'target' is not declared '# one of: local, kind, kubeconfig'")
            problems += [
                f"secret parameter {d.name!r} has a non-empty default"
                for d in decls.values()
                if d.secret and d.default
            ]
    except ParameterError as e:
        problems.append(f"parameters cell: {e}")
    code = [c for c in cells if c.get("cell_type") == "code"]
    if not any("record.check(" in _source(c) or "check(" in _source(c) for c in code):
        problems.append("no acceptance check is recorded (record.check)")
    if not code or "require_all_checks()" not in _source(code[-1]):
        problems.append("the last code cell does not call record.require_all_checks()")
    gate = SecretGate()
    for i, cell in enumerate(cells):
        src = _source(cell)
        if gate.redact_text(src)[1]:
            problems.append(f"cell {i} contains a secret-looking pattern")
        if cell.get("cell_type") == "code" and SECRET_ASSIGN.search(src):
            problems.append(f"cell {i} assigns a credential-named variable a literal")
    return problems


@pytest.mark.parametrize("path", RUNBOOKS, ids=[p.name for p in RUNBOOKS])
def test_runbook_follows_conventions(path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    assert convention_problems(nb) == []


GOOD_MD = "# Demo\n## Purpose\nx\n## Preconditions\nx\n## Acceptance criteria\nx\n## Rollback\nx"


def test_checker_accepts_a_conforming_runbook(tmp_path) -> None:
    path = write_notebook(
        tmp_path / "ok.ipynb",
        ["from clinops_lib.runs import record\nrecord.check('a', 1, 1, '==')", "record.require_all_checks()"],
        'rate = 1  # int, 1..9\ntarget = "local"  # one of: local, kind, kubeconfig\npw = ""  # secret',
        markdown=GOOD_MD,
    )
    assert convention_problems(nbformat.read(str(path), as_version=4)) == []


def test_checker_names_each_violation(tmp_path) -> None:
    path = write_notebook(
        tmp_path / "bad.ipynb",
        ["db_password = 'hunter2-real'\nkey = 'AKIAABCDEFGHIJKLMNOP'", "print(1)"],
        'rate = 1\ntarget = "local"  # str',
        markdown="# Demo\nPurpose only",
    )
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="1")]
    nb.cells[2].execution_count = 3
    nb.metadata["kernelspec"]["name"] = "python3"
    problems = " | ".join(convention_problems(nb))
    for fragment in (
        "kernelspec",
        "cell 2 has outputs",
        "cell 2 has an execution count",
        "Preconditions, Acceptance criteria, Rollback",
        "missing the trailing comment",
        "no acceptance check",
        "require_all_checks",
        "secret-looking pattern",
        "credential-named variable",
    ):
        assert fragment in problems, fragment


def test_ci_runs_the_four_runbooks_with_pinned_actions() -> None:
    import yaml

    ci = yaml.safe_load((Path(__file__).resolve().parent.parent / ".github/workflows/ci.yml").read_text())
    jobs = ci["jobs"]
    assert {"lint", "types", "tests", "runbooks"} <= set(jobs)
    for name, job in jobs.items():
        needs = job.get("needs", [])
        assert set([needs] if isinstance(needs, str) else needs) <= set(jobs) - {name}, name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+", step["uses"]), step["uses"]
    # the four runbooks run once, in the tests job's e2e tier, which keeps their bundles for the
    # runbooks job (push + verify --remote, tests/test_workflows.py); they are not run twice
    script = "\n".join(s.get("run", "") for s in jobs["runbooks"]["steps"])
    assert "clinops run " not in script
    e2e = (Path(__file__).resolve().parent / "test_runbooks_e2e.py").read_text()
    sequence = e2e[e2e.index("SEQUENCE = ["):e2e.index("\n]", e2e.index("SEQUENCE = ["))]
    for rb in ("00-provision", "01-deploy-levels", "02-canary-drill", "03-blue-green-drill"):
        assert f'"{rb}.ipynb"' in sequence, rb
    assert any(s.get("uses", "").startswith("actions/upload-artifact@v4") for s in jobs["runbooks"]["steps"])
    assert "bash scripts/test.sh" in "\n".join(s.get("run", "") for s in jobs["tests"]["steps"])
