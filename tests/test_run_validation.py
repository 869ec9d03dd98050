"""Bad input to ``clinops run`` is refused before anything runs: exit 2 naming the thing, no traceback,
no kernel started, no bundle written.

"No kernel started" is observed, not assumed: Jupyter writes a connection file into
``$JUPYTER_RUNTIME_DIR`` for every kernel it starts, and the tests point that variable at an
empty directory of their own. The real runbooks are used where the rule belongs to a drill
(fault grammar, versions, pause_scale, alpha, the blue-green window), small notebooks where it
belongs to the runner (files, ``--out``, YAML).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_notebook

from clinops_lib.cli import main

ROOT = Path(__file__).resolve().parent.parent
CANARY = str(ROOT / "runbooks" / "02-canary-drill.ipynb")
BLUE_GREEN = str(ROOT / "runbooks" / "03-blue-green-drill.ipynb")
PARAMS = 'rate = 200  # int, 1..2000\nsteps = [10, 50]  # list[int], 1..100\nlabel = "x"  # str\n'
#: Longest error line a user may get for any input, however large or nested the input was.
MESSAGE_BOUND = 600


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "jupyter-runtime"
    path.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    return path


def _refused(args: list[str], tmp_path: Path, runtime_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``clinops run ARGS --out <tmp>/evidence`` (unless --out is given); return stderr."""
    archive = tmp_path / "evidence"
    out = [] if "--out" in args else ["--out", str(archive)]
    rc = main(["run", *args, *out, "--no-progress"])  # a traceback would raise out of here
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert list(runtime_dir.iterdir()) == [], "a kernel was started"
    assert not archive.exists(), "a bundle (or the archive) was written"
    lines = [line for line in err.splitlines() if "error" in line]
    assert lines and all(len(line) <= MESSAGE_BOUND for line in lines), err[:2000]
    return err


# -- drills' rules, checked by the runner on the real runbooks ------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize(
    ("runbook", "params", "name", "words"),
    [
        (CANARY, [("fault", "errors:5%%")], "fault", "cannot parse"),
        (CANARY, [("fault", "errors:5%,errors:6%")], "fault", "given twice"),
        (CANARY, [("pause_scale", "0")], "pause_scale", ""),
        (CANARY, [("pause_scale", "-0.5")], "pause_scale", ""),
        (CANARY, [("alpha", "0")], "alpha", ""),
        (CANARY, [("alpha", "1")], "alpha", ""),
        (CANARY, [("canary_version", "1.0 beta")], "canary_version", "version"),
        (CANARY, [("canary_version", "_rc1")], "canary_version", "version"),
        (CANARY, [("stable_version", "x" * 200)], "stable_version", "version"),
        (CANARY, [("pause_scale", "0.001")], "pause_scale", "analysis interval"),
        (BLUE_GREEN, [("fault", "latency:100ms")], "fault", "cannot parse"),
        (BLUE_GREEN, [("green_version", "1.0/2")], "green_version", "version"),
        (BLUE_GREEN, [("blue_version", "")], "", ""),  # sanity: an empty blue version is allowed
        (BLUE_GREEN, [("pause_scale", "0.02")], "pause_scale", "scale-down"),
    ],
)
def test_drill_parameters_are_checked_before_a_kernel_starts(
    runbook: str,
    params: list[tuple[str, str]],
    name: str,
    words: str,
    tmp_path: Path,
    runtime_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not name:  # the sanity case: combined with a bad fault so nothing runs
        params = [*params, ("fault", "bogus")]
        name = "fault"
    args = [runbook] + [a for p in params for a in ("-p", *p)]
    err = _refused(args, tmp_path, runtime_dir, capsys)
    assert f"'{name}'" in err or f"{name}:" in err or f"{name} " in err, err
    assert words.lower() in err.lower(), err


@pytest.mark.unit
def test_declared_ranges_are_the_real_ranges() -> None:
    """What a parameters cell declares is what the drill accepts: no value the declaration allows
    is refused later by the drill (pause_scale 0 and alpha 0/1 were allowed by 0..1)."""
    from clinops_lib.runs import params as P

    for runbook in (CANARY, BLUE_GREEN):
        nb = json.loads(Path(runbook).read_text())
        decls = P.parse_notebook(nb)
        assert decls["pause_scale"].describe() == "float in 0<..1", decls["pause_scale"].describe()
        assert decls["alpha"].describe() == "float in 0<..<1", decls["alpha"].describe()
        assert decls["fault"].type == "fault"
        for v in [n for n in decls if n.endswith("_version")]:
            assert decls[v].type == "version", v


# -- the runner's own inputs ---------------------------------------------------------------------------
def _notebook(tmp_path: Path) -> str:
    return str(write_notebook(tmp_path / "guarded.ipynb", ["print('ran')"], PARAMS))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("case", "name"),
    [
        ("out is a file", "--out"),
        ("out below a file", "--out"),
        ("params file not utf-8", "-f"),
        ("params file a list", "-f"),
        ("params file a scalar", "-f"),
        ("params file duplicate key", "-f"),
        ("params file alias bomb", "-f"),
        ("params file huge integer", "rate"),
        ("cli huge integer", "rate"),
        ("cli huge list", "steps"),
        ("cli parameter twice", "rate"),
        ("notebook cells not a list", "runbook"),
        ("notebook not json", "runbook"),
        ("notebook binary", "runbook"),
        ("notebook a list", "runbook"),
    ],
)
def test_runner_inputs_are_checked_before_a_kernel_starts(
    case: str, name: str, tmp_path: Path, runtime_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nb = _notebook(tmp_path)
    f = tmp_path / "params.yaml"
    args: list[str]
    if case == "out is a file":
        (tmp_path / "a-file").write_text("x")
        args = [nb, "--out", str(tmp_path / "a-file")]
    elif case == "out below a file":
        (tmp_path / "a-file").write_text("x")
        args = [nb, "--out", str(tmp_path / "a-file" / "evidence")]
    elif case.startswith("params file"):
        content = {
            "params file not utf-8": b"label: \xff\xfe\n",
            "params file a list": b"- rate\n- 5\n",
            "params file a scalar": b"5\n",
            "params file duplicate key": b"rate: 5\nrate: 6\n",
            "params file alias bomb": (
                b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                b"steps: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
            ),
            "params file huge integer": b"rate: 1" + b"0" * 5000 + b"\n",
        }[case]
        f.write_bytes(content)
        args = [nb, "-f", str(f)]
    elif case == "cli huge integer":
        args = [nb, "-p", "rate", "9" * 5000]
    elif case == "cli huge list":
        args = [nb, "-p", "steps", "[" + ", ".join(["500"] * 20000) + "]"]
    elif case == "cli parameter twice":
        args = [nb, "-p", "rate", "5", "-p", "rate", "6"]
    else:
        bad = tmp_path / "bad.ipynb"
        content = {
            "notebook cells not a list": json.dumps({"cells": 5}).encode(),
            "notebook not json": b'{"cells": [',
            "notebook binary": bytes(range(256)),
            "notebook a list": b"[1, 2]",
        }[case]
        bad.write_bytes(content)
        args = [str(bad)]
    err = _refused(args, tmp_path, runtime_dir, capsys)
    if name == "runbook":
        assert "bad.ipynb" in err, err
    else:
        assert name in err, err


@pytest.mark.component
def test_a_good_run_still_starts_the_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The guard above is not 'refuse everything': the same notebook with good input runs."""
    nb = _notebook(tmp_path)
    (tmp_path / "ok.yaml").write_text("rate: 5\nsteps: [1, 2]\n")
    rc = main(["run", nb, "-f", str(tmp_path / "ok.yaml"), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert rc == 0, capsys.readouterr()
