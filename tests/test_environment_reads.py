"""The environment is read in one place (clinops_lib/config.py), issue 10.

Every access to ``os.environ`` / ``os.getenv`` / ``os.putenv`` in ``clinops_lib`` outside
config.py fails this test unless the allow-list below names the module, how many accesses it
has and why they must stay. Code inside strings (a launcher script a component runs, lines the
runner writes into a kernel) is not the library reading its environment and is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clinops_lib.config import DEFAULT_CACHE_DIR, DEFAULT_PG_BIN, Settings

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "clinops_lib"
ONE_PLACE = "config.py"
_OS_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}

#: module (relative to clinops_lib/) -> (accesses, why they stay outside config.py)
ALLOWED: dict[str, tuple[int, str]] = {
    "services/_common.py": (1, "the services' one place (ServiceConfig.from_env): a service is its own "
                               "process and may not import config.py (import-linter: services import "
                               "nothing of the orchestration side)"),
    "pipeline/config.py": (1, "the pipeline jobs' one place (PipelineConfig.from_env): the jobs run in "
                              ".venv-pipeline processes that Airflow starts"),
    "pipeline/dags/clinops_pipeline.py": (2, "a DAG file parsed by Airflow in .venv-airflow, where "
                                             "clinops_lib's dependencies are not installed: the "
                                             "environment is its only input"),
    "pipeline/airflow_launcher.py": (2, "the entry point run inside .venv-airflow: AIRFLOW_HOME of the "
                                        "Airflow it migrates and PYTHONUNBUFFERED for the processes "
                                        "it starts (issue 14's module)"),
    "pipeline/train.py": (1, "Airflow's task context (AIRFLOW_CTX_DAG_RUN_ID) in the job Airflow runs; "
                             "would belong in PipelineConfig (issue 14's module)"),
    "runs/runner.py": (6, "the runner sets the variables the kernel inherits (papermill starts the "
                          "kernel from this process's environment) and restores them after; the secret "
                          "gate scans every variable for credentials (a scan, not a setting)"),
}


def environment_accesses(source: str) -> list[int]:
    """Line numbers of every environment access in ``source`` (``os.environ...``, ``os.getenv(...)``,
    ``from os import environ``); code inside string literals is not code and is not counted."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and node.attr in _OS_NAMES
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                a.name in _OS_NAMES for a in node.names):
            lines.append(node.lineno)
    return sorted(lines)


def _accesses_by_module() -> dict[str, list[int]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == ONE_PLACE:
            continue
        if lines := environment_accesses(path.read_text()):
            found[rel] = lines
    return found


def test_the_scanner_sees_every_form_of_access_and_not_strings() -> None:
    source = (
        "import os\nfrom os import getenv\n"
        "a = os.environ.get('X')\nb = os.getenv('Y')\nc = dict(os.environ)\nos.environ['Z'] = '1'\n"
        "launcher = \"import os; os.environ.get('IN_A_STRING')\"\n"
    )
    assert environment_accesses(source) == [2, 3, 4, 5, 6]


def test_only_config_reads_the_environment_outside_the_allow_list() -> None:
    found = _accesses_by_module()
    unexpected = {m: lines for m, lines in found.items() if m not in ALLOWED}
    assert not unexpected, (
        f"environment read outside clinops_lib/config.py: {unexpected}; read it through Settings / "
        "child_environment() there (or, when it must stay, add it to ALLOWED with the reason)")
    counts = {m: len(lines) for m, lines in found.items()}
    changed = {m: (counts.get(m, 0), n) for m, (n, _) in ALLOWED.items() if counts.get(m, 0) != n}
    assert not changed, f"allowed modules whose accesses changed (found, allowed): {changed}; update ALLOWED"


def test_the_machine_settings_follow_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"CLINOPS_PG_BIN": "/opt/pg/bin", "CLINOPS_CACHE_DIR": "/srv/cache", "PYTHONDONTWRITEBYTECODE": "1"}
    s = Settings.from_env(env)
    assert (s.pg_bin, s.cache_dir, s.python_no_bytecode) == (Path("/opt/pg/bin"), Path("/srv/cache"), True)
    for name in env:
        monkeypatch.delenv(name, raising=False)
    d = Settings()
    defaults = (Path(DEFAULT_PG_BIN), Path(DEFAULT_CACHE_DIR), False)
    assert (d.pg_bin, d.cache_dir, d.python_no_bytecode) == defaults
    monkeypatch.setenv("CLINOPS_PG_BIN", "/opt/pg/bin")  # built directly (as tests do): still followed
    assert Settings().pg_bin == Path("/opt/pg/bin")
