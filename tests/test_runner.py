"""``clinops run``: real papermill executions on the ``clinops`` kernel, and rejected inputs.

Two runs are shared by the whole module (each costs a kernel start): one that passes with a
plot, a table and a check; one whose cell raises. Bad inputs never start a kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import write_notebook

from clinops_lib import evidence
from clinops_lib.cli import main

pytestmark = pytest.mark.component

PARAMS = """\
rate = 200  # int, 1..2000
scale = 0.5  # float, 0..1
mode = "a"  # one of: a, b
steps = [10, 50]  # list[int], 1..100
dry_run = False  # bool
label = "x"  # str
target = "local"  # one of: local, kind, kubeconfig
"""

PASSING = [
    """\
import json, os
import pandas as pd
import plotly.graph_objects as go
from clinops_lib.runs import record
fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, rate], name="rate"))
fig.show()
record.figure("rate-plot", fig)
record.table("steps", pd.DataFrame({"step": steps}))
record.check("rate within limit", rate, 1000, "<=", "req/s")
print(json.dumps({"run_id": os.environ["CLINOPS_RUN_ID"], "renderer": os.environ["PLOTLY_RENDERER"],
                  "artifacts": os.environ["CLINOPS_ARTIFACT_DIR"], "target": target, "rate": rate,
                  "label": label, "cwd": os.getcwd()}))""",
    "record.require_all_checks()",
]

FAILING = [
    "import os\nfrom clinops_lib.runs import record\nrecord.check('error budget', 5, 1, '<=')\n"
    "print('signing key visible:', os.environ.get('CLINOPS_SIGNING_KEY'))",
    "raise ValueError(f'boom at step {n}')",
    "print('never reached')",
]


def _bundles(archive: Path) -> list[Path]:
    return sorted(p.parent for p in archive.glob("*/*/manifest.json"))


@pytest.fixture(scope="module")
def passing(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("passing")
    nb = write_notebook(tmp / "rb" / "demo-pass.ipynb", PASSING, PARAMS)
    archive = tmp / "evidence"
    rc = main(
        [
            "run",
            str(nb),
            "-p",
            "rate",
            "300",
            "-p",
            "label",
            "1.10",
            "--target",
            "kind",
            "--out",
            str(archive),
        ]
    )
    bundles = _bundles(archive)
    assert len(bundles) == 1
    return {"rc": rc, "bundle": bundles[0], "archive": archive, "runbook_dir": nb.parent}


@pytest.fixture(scope="module")
def failing(tmp_path_factory) -> dict:
    """A signed run whose cell raises (the signing key comes from CLINOPS_SIGNING_KEY)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    tmp = tmp_path_factory.mktemp("failing")
    key = Ed25519PrivateKey.generate()
    (tmp / "signing.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp / "signing.pub.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    nb = write_notebook(tmp / "demo-fail.ipynb", FAILING, "n = 1  # int, 0..9")
    archive = tmp / "evidence"
    saved = os.environ.get("CLINOPS_SIGNING_KEY")
    os.environ["CLINOPS_SIGNING_KEY"] = str(tmp / "signing.pem")
    try:
        rc = main(["run", str(nb), "-p", "n", "3", "--out", str(archive), "--no-progress"])
    finally:
        if saved is None:
            os.environ.pop("CLINOPS_SIGNING_KEY")
        else:
            os.environ["CLINOPS_SIGNING_KEY"] = saved
    return {"rc": rc, "bundle": _bundles(archive)[0], "archive": archive, "pub": tmp / "signing.pub.pem"}


def _outputs_text(notebook: Path) -> str:
    nb = json.loads(notebook.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
    return "".join(parts)


def test_passing_run_exits_0_with_a_complete_bundle(passing) -> None:
    assert passing["rc"] == 0
    b = passing["bundle"]
    for name in (
        "notebook.ipynb",
        "notebook.html",
        "parameters.json",
        "run-record.json",
        "verdict.json",
        "manifest.json",
        "SUMMARY.md",
        "data/rate-plot.html",
        "data/steps.csv",
        evidence.STATEMENT_UNSIGNED,
    ):
        assert (b / name).is_file(), name
    assert b.parent.name == "demo-pass"
    assert evidence.verify(passing["archive"]).problems == []


def test_kernel_gets_run_id_renderer_artifacts_and_parameters(passing) -> None:
    b = passing["bundle"]
    line = next(x for x in _outputs_text(b / "notebook.ipynb").splitlines() if x.startswith("{"))
    seen = json.loads(line)
    record = json.loads((b / "run-record.json").read_text())
    assert seen["run_id"] == record["run_id"] and b.name.endswith(record["run_id"])
    assert seen["renderer"] == "plotly_mimetype"
    assert not Path(seen["artifacts"]).exists()  # the scratch dir is gone after sealing
    assert (seen["target"], seen["rate"], seen["label"]) == (
        "kind",
        300,
        "1.10",
    )  # --target set the parameter
    assert Path(seen["cwd"]) == passing["runbook_dir"]


def test_run_record_is_attributable(passing) -> None:
    record = json.loads((passing["bundle"] / "run-record.json").read_text())
    for key in (
        "operator",
        "host",
        "started_utc",
        "ended_utc",
        "duration_seconds",
        "git",
        "target",
        "versions",
    ):
        assert record[key] not in (None, "", {}), key
    assert record["target"] == "kind"
    assert record["duration_seconds"] > 0
    assert {"python", "papermill", "nbclient", "plotly", "kubernetes", "boto3"} <= set(record["versions"])
    assert set(record["git"]) == {"commit", "dirty"}


def test_parameters_and_verdict(passing) -> None:
    b = passing["bundle"]
    params = json.loads((b / "parameters.json").read_text())
    assert params["values"]["rate"] == 300 and params["values"]["scale"] == 0.5
    assert sorted(params["given"]) == ["label", "rate", "target"]
    verdict = json.loads((b / "verdict.json").read_text())
    assert verdict["verdict"] == "PASSED" and verdict["failed_cell"] is None
    assert verdict["checks"] == [
        {
            "name": "rate within limit",
            "measured": 300,
            "limit": 1000,
            "op": "<=",
            "unit": "req/s",
            "passed": True,
        }
    ]


def test_one_copy_of_plotly_js_per_bundle(passing) -> None:
    """The library is in assets/ once; the notebook, its HTML copy and the figure file only
    reference it (relative paths, so a copied bundle still opens offline)."""
    from clinops_lib.runs.plotly_assets import asset_name

    b = passing["bundle"]
    asset = b / "assets" / asset_name()
    assert asset.stat().st_size > 3_000_000
    marker = asset.read_bytes()[-2000:]  # a piece of the library that only a copy would contain
    copies = [p for p in b.rglob("*") if p.is_file() and marker in p.read_bytes()]
    assert copies == [asset]
    html = (b / "notebook.html").read_text()
    assert '<script src="http' not in html.replace("'", '"')
    assert f'src="assets/{asset_name()}"' in html and "Plotly.newPlot" in html
    assert f'src="../assets/{asset_name()}"' in (b / "data" / "rate-plot.html").read_text()
    nb = json.loads((b / "notebook.ipynb").read_text())
    mimes = {m for c in nb["cells"] for o in c.get("outputs", []) for m in o.get("data", {})}
    assert "application/vnd.plotly.v1+json" in mimes


def _no_remote_reference(html: str) -> None:
    import re

    remote = r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(https?:)?//"""
    refs = re.findall(remote, html, re.I)
    assert refs == [], refs


@pytest.mark.parametrize("page", ["notebook.html", "data/rate-plot.html"])
def test_html_draws_the_plot_offline_in_chromium(passing, tmp_path, page: str) -> None:
    """Plots render with every network request sent to a dead proxy, and no page refers to a
    remote script, style or image (so nothing was fetched)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh --tests installs it)")
    copy = tmp_path / "copied-bundle"  # a copied bundle opens the same way
    shutil.copytree(passing["bundle"], copy)
    _no_remote_reference((copy / page).read_text())
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (copy / page).as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    assert "main-svg" in dom and "scatterlayer" in dom  # plotly.js ran and drew the trace


def test_failing_cell_still_writes_a_failed_bundle(failing) -> None:
    assert failing["rc"] == 1
    b = failing["bundle"]
    verdict = json.loads((b / "verdict.json").read_text())
    assert verdict["verdict"] == "FAILED"
    cell = verdict["failed_cell"]
    assert cell["index"] == 3  # markdown 0, parameters 1, check 2, raise 3: the runbook's own numbering
    assert cell["ename"] == "ValueError" and cell["evalue"] == "boom at step 3"
    assert any("cell 3" in r and "ValueError" in r for r in verdict["reasons"])
    assert any("error budget" in r for r in verdict["reasons"])
    nb = json.loads((b / "notebook.ipynb").read_text())
    assert any("papermill-error-cell-tag" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert "never reached" not in _outputs_text(b / "notebook.ipynb")
    statement = json.loads((b / evidence.STATEMENT_SIGNED).read_text())
    assert statement["predicate"]["result"] == "FAILED"
    assert "error budget" in statement["predicate"]["failedTests"]
    assert evidence.verify(failing["archive"]).problems == []


def test_signed_run_verifies_with_the_public_key_and_hides_the_key_from_the_kernel(failing) -> None:
    b = failing["bundle"]
    assert json.loads((b / "manifest.json").read_text())["signature"] == "ed25519-dsse"
    assert (b / evidence.ENVELOPE).is_file() and not (b / evidence.STATEMENT_UNSIGNED).exists()
    assert main(["evidence", "verify", str(failing["archive"]), "--public-key", str(failing["pub"])]) == 0
    assert "signing key visible: None" in _outputs_text(b / "notebook.ipynb")


# -- bad input: exit 2, nothing executed, no bundle ----------------------------------------------
BAD_INPUTS = {
    "unknown name": ["-p", "rte", "5"],
    "int not a number": ["-p", "rate", "abc"],
    "int given a fraction": ["-p", "rate", "1.5"],
    "int above range": ["-p", "rate", "5000"],
    "int below range": ["-p", "rate", "0"],
    "float not finite": ["-p", "scale", ".nan"],
    "float above range": ["-p", "scale", "2"],
    "choice not allowed": ["-p", "mode", "c"],
    "list element not int": ["-p", "steps", "[1, x]"],
    "list element out of range": ["-p", "steps", "[1, 500]"],
    "list given a scalar": ["-p", "steps", "5"],
    "bool not a bool": ["-p", "dry_run", "maybe"],
    "target contradicts --target": ["-p", "target", "kind", "--target", "local"],
    "params file wrong type": ["-f", "{file_wrong_type}"],
    "params file missing": ["-f", "{dir}/nope.yaml"],
    "params file not a mapping": ["-f", "{file_list}"],
    "runbook not found": ["{dir}/missing.ipynb"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_and_runs_nothing(case: str, tmp_path, capsys) -> None:
    marker = tmp_path / "executed.marker"
    nb = write_notebook(tmp_path / "guarded.ipynb", [f"open({str(marker)!r}, 'w').close()"], PARAMS)
    (tmp_path / "wrong.yaml").write_text("label: 3\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    fmt = {
        "dir": str(tmp_path),
        "file_wrong_type": str(tmp_path / "wrong.yaml"),
        "file_list": str(tmp_path / "list.yaml"),
    }
    extra = [a.format(**fmt) for a in BAD_INPUTS[case]]
    runbook = [] if extra[0].endswith(".ipynb") else [str(nb)]
    archive = tmp_path / "evidence"
    rc = main(["run", *runbook, *extra, "--out", str(archive), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error:" in err
    assert not marker.exists()
    assert not archive.exists()


def test_error_message_names_the_parameter_and_what_is_allowed(tmp_path, capsys) -> None:
    nb = write_notebook(tmp_path / "g.ipynb", ["pass"], PARAMS)
    assert main(["run", str(nb), "-p", "rate", "5000", "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert "'rate'" in err and "1..2000" in err


def test_bad_signing_key_is_rejected_before_running(tmp_path, monkeypatch, capsys) -> None:
    marker = tmp_path / "executed.marker"
    nb = write_notebook(tmp_path / "g.ipynb", [f"open({str(marker)!r}, 'w').close()"], PARAMS)
    (tmp_path / "key.pem").write_text("garbage")
    monkeypatch.setenv("CLINOPS_SIGNING_KEY", str(tmp_path / "key.pem"))
    assert main(["run", str(nb), "--out", str(tmp_path / "ev")]) == 2
    assert "key.pem" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "ev").exists()
