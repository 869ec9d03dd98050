"""A component behaves the same whether the platform comes up from a shell, CI or a runbook's kernel.

The defect this pins: a Jupyter kernel exports ``MPLBACKEND=module://matplotlib_inline.backend_inline``
for itself; the supervisor passed its whole environment to every component, so Feast (which imports
matplotlib through bigtree) died at import when runbook 01 brought the platform up from its kernel,
while ``clinops up`` from a shell worked. Components now get :func:`clinops_lib.config.child_environment`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from clinops_lib.config import HOST_SESSION_VARIABLES, child_environment
from clinops_lib.targets.local import supervisor as sup

KERNEL_ENV = {
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "JPY_PARENT_PID": "4242",
    "JPY_SESSION_NAME": "runbooks/01-deploy-levels.ipynb",
    "CLICOLOR": "1",
    "FORCE_COLOR": "1",
    "PAGER": "cat",
}


@pytest.mark.unit
def test_child_environment_drops_the_host_sessions_own_variables() -> None:
    base = {**KERNEL_ENV, "PATH": "/usr/bin", "CLINOPS_STATE_DIR": "/tmp/x", "JPYTHON": "kept"}
    env = child_environment({"LC_ALL": "C.UTF-8"}, base=base)
    assert env == {"PATH": "/usr/bin", "CLINOPS_STATE_DIR": "/tmp/x", "JPYTHON": "kept", "LC_ALL": "C.UTF-8"}


@pytest.mark.unit
def test_overrides_win_even_for_a_host_session_name() -> None:
    # a component that needs one of these names on purpose still gets it
    env = child_environment({"MPLBACKEND": "agg"}, base=KERNEL_ENV)
    assert env == {"MPLBACKEND": "agg"}


@pytest.mark.unit
def test_every_listed_name_is_dropped() -> None:
    base = {(v + "X" if v.endswith("_") else v): "1" for v in HOST_SESSION_VARIABLES}
    assert child_environment(base=base) == {}


@pytest.mark.component  # one short-lived real child process
def test_a_supervised_process_started_from_a_kernel_does_not_see_the_kernels_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real start path (a detached child of the supervisor), under a kernel-like environment."""
    for k, v in KERNEL_ENV.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "env.json"
    script = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    spec = sup.ProcessSpec(
        "env-probe",
        [sys.executable, "-c", script],
        tmp_path / "env-probe.log",
        tmp_path / "env-probe.pid",
        env={"PROBE": "yes"},
    )
    proc = sup.start(spec)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() or not out.read_text():
            assert time.monotonic() < deadline, "waited 60 s for the probe process to write its environment"
            time.sleep(0.05)
    finally:
        sup.stop(proc, timeout=10)
    seen = json.loads(out.read_text())
    assert seen["PROBE"] == "yes"
    leaked = set(KERNEL_ENV) & set(seen)
    assert not leaked, f"kernel variables reached the component: {sorted(leaked)}"
