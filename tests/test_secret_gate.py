"""The secret gate: known values and known patterns never reach a sealed bundle.

The end-to-end test runs a real notebook that leaks a secret parameter (printed and inside an
exception message), a value registered with ``record.secret()``, a credential from the
environment and an AWS key id; afterwards every file of the archive is searched for each
value in every spelling (raw, JSON-escaped, HTML-escaped).
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path

import pytest
from conftest import write_notebook

from clinops_lib.cli import main
from clinops_lib.evidence.secretgate import SecretGate, env_credentials
from clinops_lib.runs.params import REDACTED

SECRET = 's3cr"et<Xy9-42\\z'  # quote, angle bracket and backslash: escaped differently in JSON and HTML
LEARNED = "learned-value-9876-abc"
ENV_TOKEN = "envtok-5550123-qwerty"
AWS_KEY_ID = "AKIAABCDEFGHIJKLMNOP"


def _spellings(value: str) -> set[str]:
    j = json.dumps(value)[1:-1]
    return {value, j, html.escape(value), html.escape(j), html.escape(value, quote=False)}


# -- unit: values and patterns ------------------------------------------------------------------
def test_env_credentials_skip_placeholders_and_paths() -> None:
    env = {
        "GITHUB_TOKEN": "ghp_" + "a" * 36,
        "AWS_SECRET_ACCESS_KEY": "test",
        "DB_PASSWORD": "correct-horse-9",
        "CLINOPS_SIGNING_KEY": "/keys/signing.pem",
        "HOME": "/root",
        "API_TOKEN_FILE": "/run/secret",
    }
    labels = {label for label, _ in env_credentials(env)}
    assert labels == {"environment variable GITHUB_TOKEN", "environment variable DB_PASSWORD"}


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("key id AKIAIOSFODNN7EXAMPLE in a log", "AWS access key id"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS secret access key"),
        ("token ghp_" + "A1b2C3d4E5" * 4, "GitHub token"),
        ("xoxb-1234567890-abcdefghij", "Slack token"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXk\\n-----END OPENSSH PRIVATE KEY-----",
            "PEM private key",
        ),
    ],
)
def test_patterns_are_redacted(text: str, label: str) -> None:
    out, found = SecretGate().redact_text(text)
    assert found == [label]
    assert REDACTED in out
    assert "EXAMPLE" not in out and "b3BlbnNz" not in out and "abcdefghij" not in out and "A1b2C3" not in out


def test_plotly_js_has_no_false_positive() -> None:
    """Every bundle's HTML inlines plotly.js: the patterns must not fire on it."""
    from plotly.offline import get_plotlyjs

    assert SecretGate().redact_text(get_plotlyjs())[1] == []


def test_values_are_found_in_every_spelling_and_binary_files(tmp_path) -> None:
    gate = SecretGate([("secret parameter 'token'", SECRET)])
    (tmp_path / "a.json").write_text(json.dumps({"out": f"x {SECRET} y"}))
    (tmp_path / "b.html").write_text(f"<pre>{html.escape(SECRET)}</pre>")
    (tmp_path / "c.bin").write_bytes(b"\xff\xfe" + SECRET.encode() + b"\x00")
    (tmp_path / "d.txt").write_text("nothing here")
    findings = gate.sweep(tmp_path)
    assert sorted(findings) == sorted(
        f"secret parameter 'token' in {n}" for n in ("a.json", "b.html", "c.bin")
    )
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert not any(s.encode() in data for s in _spellings(SECRET)), path
    assert gate.sweep(tmp_path) == []  # idempotent: nothing left to find


# -- end to end: a real run that leaks on purpose -----------------------------------------------------
LEAKY = [
    "from clinops_lib.runs import record\nprint('token is', token)",
    "import os\nlearned = record.secret('learned-value-' + '9876-abc')\nprint('learned', learned)\n"
    "print('env', os.environ['CLINOPS_TEST_API_TOKEN'])\nprint('aws', 'AKIA' + 'ABCDEFGHIJKLMNOP')",
    "record.check('ran', 1, 1, '==')",
    "raise RuntimeError(f'login failed with {token}')",
]


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("leaky")
    nb = write_notebook(tmp / "leaky.ipynb", LEAKY, 'token = ""  # secret\nlabel = "x"  # str')
    archive = tmp / "evidence"
    saved = os.environ.get("CLINOPS_TEST_API_TOKEN")
    os.environ["CLINOPS_TEST_API_TOKEN"] = ENV_TOKEN
    try:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["run", str(nb), "-p", "token", SECRET, "--out", str(archive), "--no-progress"])
    finally:
        if saved is None:
            os.environ.pop("CLINOPS_TEST_API_TOKEN", None)
        else:
            os.environ["CLINOPS_TEST_API_TOKEN"] = saved
    bundle = next(archive.glob("*/*/manifest.json")).parent
    return {"rc": rc, "archive": archive, "bundle": bundle, "console": out.getvalue() + err.getvalue()}


def test_leak_fails_the_run(leaky_run) -> None:
    assert leaky_run["rc"] == 1
    verdict = json.loads((leaky_run["bundle"] / "verdict.json").read_text())
    assert verdict["verdict"] == "FAILED"
    findings = " | ".join(verdict["secret_gate"]["findings"])
    for label in (
        "secret parameter 'token'",
        "record.secret() value #1",
        "environment variable CLINOPS_TEST_API_TOKEN",
        "AWS access key id",
    ):
        assert label in findings, findings
    assert verdict["failed_cell"]["ename"] == "RuntimeError"
    assert verdict["failed_cell"]["evalue"] == f"login failed with {REDACTED}"


@pytest.mark.parametrize("value", [SECRET, LEARNED, ENV_TOKEN, AWS_KEY_ID])
def test_no_file_in_the_archive_holds_a_secret(leaky_run, value: str) -> None:
    files = [p for p in leaky_run["archive"].rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        data = path.read_bytes()
        for spelling in _spellings(value):
            assert spelling.encode() not in data, f"{spelling!r} in {path}"
    for spelling in _spellings(value):
        assert spelling not in leaky_run["console"]


def test_redaction_is_visible_where_the_leak_was(leaky_run) -> None:
    b = leaky_run["bundle"]
    for name in ("notebook.ipynb", "notebook.html", "verdict.json", "parameters.json"):
        assert REDACTED in (b / name).read_text(), name
    params = json.loads((b / "parameters.json").read_text())
    assert params["values"]["token"] == REDACTED


def test_sealed_leaky_bundle_still_verifies_and_no_scratch_is_left(leaky_run) -> None:
    from clinops_lib import evidence

    assert evidence.verify(leaky_run["archive"]).problems == []
    run_id = json.loads((leaky_run["bundle"] / "run-record.json").read_text())["run_id"]
    assert not list(Path(tempfile.gettempdir()).glob(f"clinops-run-{run_id}-*"))


def test_secret_parameter_that_is_not_shown_passes(tmp_path) -> None:
    """A secret parameter by itself is not a leak: it reaches the kernel, not the notebook."""
    nb = write_notebook(
        tmp_path / "quiet.ipynb",
        [
            "from clinops_lib.runs import record\nrecord.check('token length', len(token), 10, '>=')",
            "record.require_all_checks()",
        ],
        'token = ""  # secret',
    )
    archive = tmp_path / "evidence"
    assert main(["run", str(nb), "-p", "token", SECRET, "--out", str(archive), "--no-progress"]) == 0
    bundle = next(archive.glob("*/*/manifest.json")).parent
    assert json.loads((bundle / "verdict.json").read_text())["secret_gate"]["findings"] == []
    assert all(SECRET.encode() not in p.read_bytes() for p in archive.rglob("*") if p.is_file())
