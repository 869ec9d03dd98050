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

pytestmark = pytest.mark.component

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


# -- normalization: every encoding the bundle's formats use ---------------------------------------------
AWS_LIKE = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9Q"  # a slash: plotly writes it as \u002f


def _csv_field(value: str) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerow([f"x{value}y"])
    return buf.getvalue()


def _encodings(value: str) -> dict[str, str]:
    import base64
    import urllib.parse

    raw = value.encode()
    plotly_json = json.dumps(value).replace("/", "\\u002f")
    return {
        "json \\u002f": f'{{"title": {plotly_json}}}',
        "json \\uXXXX everything": json.dumps(value, ensure_ascii=True).replace(
            value[0], f"\\u{ord(value[0]):04x}"
        ),
        "html entities": html.escape(value).replace(value[1], f"&#{ord(value[1])};"),
        "html inside json": json.dumps(f"<p>{html.escape(value)}</p>"),
        "url": "https://h/?q=" + urllib.parse.quote(value, safe=""),
        "url plus in form": urllib.parse.quote_plus(value),
        "csv": _csv_field('"' + value),
        "repr": repr(value.encode()),
        "repr bytes as hex escapes": "b'" + "".join(f"\\x{b:02x}" for b in raw) + "'",
        "base64 aligned 0": base64.b64encode(raw).decode(),
        "base64 aligned 1": base64.b64encode(b"a" + raw).decode(),
        "base64 aligned 2": base64.b64encode(b"ab" + raw + b"z").decode(),
        "urlsafe base64": base64.urlsafe_b64encode(b"?" + raw).decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "split over two prints": f"{value[:5]}\n{value[5:]}",
        "split json lines": json.dumps([value[:6] + "\n", value[6:]]),
        "split python concat": f"'{value[:7]}' '{value[7:]}'",
    }


@pytest.mark.parametrize("form", list(_encodings(AWS_LIKE)))
@pytest.mark.parametrize("value", [AWS_LIKE, SECRET + "/é"])
def test_every_encoding_is_found_and_redacted(form: str, value: str) -> None:
    text = _encodings(value)[form]
    gate = SecretGate([("secret parameter 'key'", value)])
    out, found = gate.redact_text(f"before {text} after")
    assert found == ["secret parameter 'key'"], form
    assert REDACTED in out
    assert out.startswith("before ") and out.endswith(" after")
    assert gate.redact_text(out)[1] == [], f"{form}: something of the value is left: {out!r}"


def test_redaction_keeps_json_valid() -> None:
    """A hit found in a decoded view is replaced token by token: the notebook stays JSON."""
    gate = SecretGate([("v", AWS_LIKE)])
    doc = json.dumps({"a": [AWS_LIKE[:6] + "\n", AWS_LIKE[6:]], "b": AWS_LIKE.replace("/", "\\/")})
    out, found = gate.redact_text(doc)
    assert found == ["v"]
    parsed = json.loads(out)
    assert all(REDACTED in s for s in parsed["a"])


def test_plotly_figure_html_with_a_secret_in_the_title(tmp_path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout={"title": {"text": f"key {AWS_LIKE}"}})
    (tmp_path / "fig.html").write_text(fig.to_html(include_plotlyjs=False, full_html=True))
    assert AWS_LIKE not in (tmp_path / "fig.html").read_text()  # plotly escapes the slash
    assert SecretGate([("aws", AWS_LIKE)]).sweep(tmp_path) == ["aws in fig.html"]


def test_secret_in_a_file_name_is_renamed(tmp_path) -> None:
    gate = SecretGate([("token", LEARNED)])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / f"rows-{LEARNED}.csv").write_text("a\n1\n")
    findings = gate.sweep(tmp_path)
    assert findings == ["token in a file name (data/rows-REDACTED.csv)"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["rows-REDACTED.csv"]


def test_short_declared_secret_fails_validation() -> None:
    from clinops_lib.evidence.secretgate import check_declared
    from clinops_lib.exceptions import ParameterError

    check_declared({"token": "12345678", "empty": ""})
    with pytest.raises(ParameterError, match="too short to detect reliably"):
        check_declared({"token": "1234567"})


def test_short_secret_parameter_exits_2_before_running(tmp_path, capsys) -> None:
    nb = write_notebook(tmp_path / "q.ipynb", ["print('ran')"], 'token = ""  # secret')
    archive = tmp_path / "evidence"
    assert main(["run", str(nb), "-p", "token", "abc", "--out", str(archive), "--no-progress"]) == 2
    assert "too short to detect reliably" in capsys.readouterr().err
    assert not archive.exists()


def test_short_record_secret_fails_the_cell() -> None:
    from clinops_lib.runs import record

    with pytest.raises(ValueError, match="too short to detect reliably"):
        record.secret("abc")


def test_common_files_have_no_false_positive() -> None:
    """plotly.js and a notebook's JSON decoded every way still hold no value or pattern."""
    from plotly.offline import get_plotlyjs

    gate = SecretGate([("v", "correct-horse-battery")])
    assert gate.find(get_plotlyjs()[:400_000])[1] == []


def test_manifest_and_attestation_are_gated_again_before_the_seal(tmp_path) -> None:
    """What the seal writes after the run's gate (manifest, statement) is checked once more:
    a secret there stops the seal, nothing reaches the archive."""
    from datetime import UTC, datetime

    from clinops_lib import evidence
    from clinops_lib.exceptions import SecretLeakError

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "notebook.html").write_text("<html>clean</html>")
    gate = SecretGate([("token", LEARNED)])
    verdict = {"verdict": "PASSED", "checks": [{"name": f"login as {LEARNED}", "passed": True}]}
    with pytest.raises(SecretLeakError, match="attestation"):
        evidence.seal(staging, tmp_path / "evidence", runbook="demo", run_id="r1",
                      started=datetime(2026, 1, 1, tzinfo=UTC), verdict=verdict, gate=gate)
    assert not list((tmp_path / "evidence").glob("*/*/manifest.json"))
