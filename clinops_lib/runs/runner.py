"""Headless runbook runs: load -> validate -> run -> gate -> seal -> raise.

``clinops run RUNBOOK -p NAME VALUE ...`` executes a runbook with papermill on the project's
own kernel ``clinops`` and seals an evidence bundle, PASSED or FAILED. The order matters:

1. **load / validate** the parameters against the runbook's ``parameters`` cell *before* a
   kernel starts: a typo or an out-of-range value exits 2 having run nothing and written no
   bundle (a rejected run is not a run);
2. **run** in a scratch directory outside the archive: papermill saves the notebook after
   every cell, so unredacted output exists only there;
3. **gate** every file for secrets (:mod:`clinops_lib.evidence.secretgate`), render the offline HTML
   from the redacted notebook, write parameters (secrets redacted), run record and verdict;
4. **seal** into the archive (:func:`clinops_lib.evidence.seal`) and delete the scratch dir;
5. **raise**: a failed cell, failed check or secret hit makes the verdict FAILED and exit 1.

Interruption is an abort, never a limbo: SIGTERM, SIGINT and SIGHUP during a run interrupt the
kernel so the running cell's clean-up (a drill's abort path) runs, no further cell starts, and
a FAILED bundle is sealed saying "interrupted by signal N at cell K"; the exit status is 128+N
(see :mod:`clinops_lib.runs.engine`). The scratch directory holds the only unredacted copy of
the executed notebook: it is removed when the run ends however it ends, and a run that was
killed outright (SIGKILL cannot be handled) has its scratch directory removed by the next run.

Secret parameters are never written into the notebook: papermill would inject them as source
code. The runner passes them to the kernel as ``CLINOPS_SECRET_<NAME>`` environment variables
and the injected cell reads them from there.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..evidence.seal import seal
from ..evidence.secretgate import SecretGate, check_declared
from ..exceptions import ConfigError, ParameterError
from . import params as P
from .engine import Interruption
from .engine import register as register_engine
from .plotly_assets import ASSETS_DIR, PLOTLY_MIME, asset_sha256, figure_div, script_tag, write_asset
from .runrecord import run_record, utc_now

__all__ = [
    "KERNEL",
    "RunResult",
    "check_out_dir",
    "load_parameters_file",
    "load_runbook",
    "render_html",
    "resolve_runbook",
    "run",
    "run_from_cli",
]

KERNEL = "clinops"
#: Longest a single cell may run (drills wait minutes, never an hour): a hung cell then fails
#: the run with evidence instead of blocking CI forever.
CELL_TIMEOUT_S = 3600
HIDDEN_FROM_KERNEL = ("CLINOPS_SIGNING_KEY",)
SECRET_ENV_PREFIX = "CLINOPS_SECRET_"  # noqa: S105 - a variable-name prefix, not a password
# nbconvert's template loads require.js and MathJax from CDNs; the plots do not need them
# (plotly.js is the bundle's own assets/ copy), and offline a CDN script only delays or breaks
# rendering. They are removed from the HTML copy.
_CDN_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']https?://[^\"']*[\"'][^>]*>\s*</script>", re.I)


@dataclass
class RunResult:
    """What a run produced: the verdict and where its bundle is."""

    verdict: str
    bundle: Path
    run_id: str
    failed_cell: dict[str, Any] | None = None
    failed_checks: list[str] = field(default_factory=list)
    secret_findings: list[str] = field(default_factory=list)
    interrupted_by: int | None = None  # the signal that interrupted the run
    awaiting_approval: dict[str, str] | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "PASSED"


# -- load ---------------------------------------------------------------------------------------
def resolve_runbook(ref: str | Path, settings: Settings) -> Path:
    """A path to an .ipynb, or a runbook's name under ``runbooks/`` (with or without suffix)."""
    candidates = [Path(ref)]
    name = str(ref) if str(ref).endswith(".ipynb") else f"{ref}.ipynb"
    candidates += [Path(name), settings.project_root / "runbooks" / name]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ConfigError(f"runbook {str(ref)!r} not found (looked for {', '.join(str(c) for c in candidates)})")


#: A parameters file is a handful of lines; anything far larger is a mistake (or an attack).
MAX_PARAMETERS_FILE_BYTES = 1_000_000


def load_parameters_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of parameter values (``-f params.yaml``): UTF-8, no aliases, no duplicate keys."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PARAMETERS_FILE_BYTES + 1)
    except OSError as e:
        raise ParameterError("-f", f"parameters file {path} cannot be read ({e.strerror})") from e
    if len(raw) > MAX_PARAMETERS_FILE_BYTES:
        raise ParameterError("-f", f"parameters file {path} is larger than {MAX_PARAMETERS_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParameterError(
            "-f", f"parameters file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from e
    data = P.load_yaml(text, "-f", f"parameters file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParameterError("-f", f"parameters file {path} must be a mapping of name: value")
    return data


def load_runbook(path: Path) -> Any:
    """The notebook at ``path``, checked against the notebook format; ConfigError names the file."""
    import nbformat
    from papermill.iorw import load_notebook_node

    try:
        nb = load_notebook_node(str(path))  # also gives every cell the metadata papermill expects
        nbformat.validate(nb)
    except RecursionError as e:
        raise ConfigError(f"runbook {path} is not a notebook (nested too deeply)") from e
    except Exception as e:  # noqa: BLE001 - any parse/shape error: the file is not a usable notebook
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"runbook {path} is not a notebook ({type(e).__name__}: {P.shown(first)})") from e
    return nb


def check_out_dir(out: Path) -> None:
    """``--out`` must be (or be creatable as) a writable directory; checked before anything runs."""
    if out.exists() and not out.is_dir():
        raise ParameterError("--out", f"{out} exists and is not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ParameterError("--out", f"{out} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError("--out", f"{out} cannot be written: {parent} is not writable for this user")


def _validate_with_runbook_rules(nb: Any, effective: Mapping[str, Any], settings: Settings) -> None:
    """Rules that span several parameters (a drill's pause versus its analysis interval, the
    blue-green window), checked by the code the runbook itself uses: the runbook names it in its
    metadata as ``clinops.validate = "clinops_lib.<module>:<function>"``."""
    import importlib

    ref = (nb.metadata.get("clinops") or {}).get("validate")
    if not ref:
        return
    module, _, func = str(ref).partition(":")
    if not module.startswith("clinops_lib.") or not func:
        raise ConfigError(
            f"runbook metadata clinops.validate={ref!r}: expected clinops_lib.<module>:<function>"
        )
    try:
        validator = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"runbook metadata clinops.validate={ref!r} cannot be loaded ({e})") from e
    validator(effective, settings)


def _abort_after_interruption(nb: Any, effective: Mapping[str, Any], settings: Settings) -> list[str]:
    """The runner's own safety net after a signal: the release of the service the runbook moves
    traffic for (metadata ``clinops.abort_on_interrupt`` names the parameter holding it) is
    aborted if a canary of it still runs or holds traffic — e.g. the kernel was killed before
    its cell's abort path could finish. Returns what was found and done, for the verdict."""
    param = (nb.metadata.get("clinops") or {}).get("abort_on_interrupt")
    if not param or not effective.get(param):
        return []
    service = str(effective[param])
    try:
        from ..drills.abort import abort_release, stray_canaries, track_rows
        from ..targets.base import get_target

        target = get_target(settings)
        try:
            strays = stray_canaries(track_rows(target, [service]))
            if not strays:
                return [f"after the interruption: {service} has no canary left running or holding traffic"]
            return ["after the interruption: " + "; ".join(abort_release(target, service))]
        finally:
            target.close()
    except Exception as e:  # noqa: BLE001 - the run is being sealed: say what failed, never lose the bundle
        return [f"after the interruption: could not check/abort {service} ({type(e).__name__}: {e}); "
                f"run `clinops abort {service}`"]


def _sweep_stale_scratch(root: Path) -> None:
    """Remove scratch dirs of runs whose process is gone (killed outright: no clean-up ran)."""
    for d in root.glob("clinops-run-*"):
        try:
            pid, ticks = (d / "owner").read_text().split()
        except (OSError, ValueError):
            continue  # not ours to judge (or being created right now)
        if _process_start(int(pid)) != ticks:
            shutil.rmtree(d, ignore_errors=True)


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (pid + this identify it across pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def _check_kernel() -> None:
    from jupyter_client.kernelspec import NoSuchKernel, get_kernel_spec

    try:
        get_kernel_spec(KERNEL)
    except NoSuchKernel as e:
        raise ConfigError(f"Jupyter kernel {KERNEL!r} is not installed; run scripts/setup.sh") from e


def _preflight_promotion(values: Mapping[str, Any], settings: Settings) -> None:
    from ..evidence.approvals import preflight_promotion

    preflight_promotion(values, settings)


#: Checks a runbook asks for in its metadata (``"clinops": {"preflight": [NAME, ...]}``): they
#: run after parameter validation and before a kernel starts, so a refusal is exit 2 with
#: nothing run, nothing moved and no bundle (a rejected run is not a run).
PREFLIGHTS: dict[str, Callable[[Mapping[str, Any], Settings], None]] = {
    "approved-promotion": _preflight_promotion,
}


def _preflight(nb: Any, values: Mapping[str, Any], settings: Settings) -> None:
    names = nb.metadata.get("clinops", {}).get("preflight", [])
    for name in [names] if isinstance(names, str) else names:
        if name not in PREFLIGHTS:
            raise ConfigError(f"runbook asks for preflight {name!r}; known: {', '.join(PREFLIGHTS)}")
        PREFLIGHTS[name](values, settings)


# -- run ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _environ(extra: Mapping[str, str], hide: tuple[str, ...] = HIDDEN_FROM_KERNEL) -> Iterator[None]:
    """Set variables for the kernel (it inherits the runner's environment), then restore.

    Variables in ``hide`` are removed meanwhile: the signing key is the runner's, and a
    notebook that could find it could sign evidence of its own making.
    """
    saved = {k: os.environ.get(k) for k in (*extra, *hide)}
    for k in hide:
        os.environ.pop(k, None)
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _parameterize(
    nb: Any, decls: Mapping[str, P.Declaration], values: Mapping[str, Any]
) -> tuple[Any, int | None]:
    """Inject the given values after the parameters cell; secrets as environment lookups.

    Returns the notebook and the index of the injected cell (None when nothing was given).
    """
    from papermill.parameterize import parameterize_notebook

    if not values:
        return nb, None
    plain = {k: v for k, v in values.items() if not decls[k].secret}
    nb = parameterize_notebook(nb, plain, kernel_name=KERNEL, language="python")
    index = next(i for i, c in enumerate(nb.cells) if "injected-parameters" in c.metadata.get("tags", []))
    secrets = [k for k in values if decls[k].secret]
    if secrets:
        lines = ["import os as _clinops_os  # secret parameters come from the runner's environment"]
        lines += [f"{k} = _clinops_os.environ[{SECRET_ENV_PREFIX + k.upper()!r}]" for k in secrets]
        nb.cells[index].source = nb.cells[index].source.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    nb.metadata.papermill["parameters"] = P.redacted(decls, values)
    return nb, index


def _execute(
    nb: Any,
    out_path: Path,
    cwd: Path,
    progress: bool,
    env: Mapping[str, str],
    injected: int | None,
    interruption: Interruption,
) -> dict[str, Any] | None:
    """Run the notebook with papermill; returns the failed cell (None when every cell ran)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        with _environ(env):
            papermill.execute_notebook(
                nb,
                str(out_path),
                kernel_name=KERNEL,
                engine_name=register_engine(interruption),
                progress_bar=progress,
                log_output=False,
                cwd=str(cwd),
                request_save_on_cell_execute=True,
                execution_timeout=CELL_TIMEOUT_S,
            )
    except PapermillExecutionError as e:
        index = e.cell_index
        if injected is not None and index > injected:
            index -= 1  # the runbook's own numbering, as its author sees it in JupyterLab
        return {
            "index": index,
            "execution_count": e.exec_count,
            "ename": e.ename,
            "evalue": e.evalue,
            "source": e.source,
        }
    except Exception as e:  # noqa: BLE001 - a dead kernel or timeout is still a FAILED run with evidence
        return {
            "index": None,
            "execution_count": None,
            "ename": type(e).__name__,
            "evalue": str(e),
            "source": "",
        }
    finally:
        interruption.wait_for_kernel_exit()
    return None


def _runbook_index(index: int | None, injected: int | None) -> int | None:
    """A cell index of the executed notebook in the runbook's own numbering (as in JupyterLab)."""
    if index is not None and injected is not None and index > injected:
        return index - 1
    return index


def _interruption_reason(interruption: Interruption, injected: int | None) -> str | None:
    if interruption.signum is None:
        return None
    cell = _runbook_index(interruption.cell_index, injected)
    where = f"cell {cell}" if interruption.cells_started else "start-up (before any cell ran)"
    return f"interrupted by signal {interruption.signum} at {where}"


# -- gate and bundle --------------------------------------------------------------------------------
def render_html(notebook: Path, out: Path, signatures: list[str] | None = None) -> None:
    """Offline HTML copy: images inlined, no CDN scripts, plots drawn by the bundle's one
    ``assets/plotly-*.min.js`` (written beside ``out`` when the notebook has a plot), and the
    manifestation of every signature the run carries (printed name, UTC time, meaning)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    plots = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            figure = output.get("data", {}).get(PLOTLY_MIME)
            if isinstance(figure, dict):
                plots += 1
                output["data"]["text/html"] = figure_div(figure, f"clinops-plot-{plots}")
    exporter = HTMLExporter(
        embed_images=True,
        template_name="html_copy",  # lab layout, compact stylesheet: see html_copy/index.html.j2
        extra_template_basedirs=[str(Path(__file__).resolve().parent)],
    )
    body, _ = exporter.from_notebook_node(nb)
    body = _CDN_SCRIPT.sub("", body)
    if plots:
        write_asset(out.parent)
        body = body.replace("</head>", f"{script_tag()}\n</head>", 1)
    if signatures:
        items = "".join(f"<li>{html.escape(s)}</li>" for s in signatures)
        banner = f'<section id="clinops-signatures"><h2>Electronic signatures</h2><ul>{items}</ul></section>'
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + banner, body, count=1)
    out.write_text(body, encoding="utf-8")


def _read_checks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _verdict(
    failed_cell: dict[str, Any] | None,
    checks: list[dict[str, Any]],
    findings: list[str],
    gate: SecretGate,
    interrupted: str | None = None,
) -> dict[str, Any]:
    reasons = [interrupted] if interrupted else []
    cell = None
    if failed_cell is not None:
        cell = {k: gate.redact_text(v)[0] if isinstance(v, str) else v for k, v in failed_cell.items()}
        first = (cell.get("source") or "").strip().splitlines()[:1]
        cell["source_first_line"] = first[0] if first else ""
        del cell["source"]
        reasons.append(
            f"cell {cell['index']} (In [{cell['execution_count']}]) raised {cell['ename']}: {cell['evalue']}"
        )
    failed = [c for c in checks if not c.get("passed")]
    reasons += [
        f"check {c['name']!r} failed: measured {c.get('measured')} not {c.get('op')} {c.get('limit')}"
        for c in failed
    ]
    if findings:
        reasons.append(f"secret gate: {len(findings)} finding(s), redacted: " + "; ".join(findings))
    return {
        "verdict": "FAILED" if reasons else "PASSED",
        "awaiting_approval": None,
        "reasons": reasons,
        "failed_cell": cell,
        "checks": checks,
        "secret_gate": {"findings": findings, "redacted_with": P.REDACTED},
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _signature_lines(staging: Path) -> list[str]:
    """The manifestation (printed name, UTC time, meaning) of every approval the run carries.

    The runbook verified them before acting; ``clinops evidence verify`` verifies them again."""
    from ..evidence.approvals import signature_line

    folder = staging / "data" / "approvals"
    if not folder.is_dir():
        return []
    return [signature_line(p.read_bytes()) for p in sorted(folder.glob("*.approval.json"))]


def _summary(
    record: Mapping[str, Any], verdict: Mapping[str, Any], signatures: list[str] | None = None
) -> str:
    status = verdict["verdict"]
    if verdict.get("awaiting_approval") and status == "PASSED":
        status = "PASSED, AWAITING_APPROVAL"
    lines = [
        f"# {record['runbook']}: {status}",
        "",
        f"- run id: {record['run_id']}",
        f"- target: {record['target']}",
        f"- operator: {record['operator']} on {record['host']}",
        f"- started: {record['started_utc']}  ended: {record['ended_utc']}",
        f"- commit: {record['git']['commit']} (dirty: {record['git']['dirty']})",
        "",
        "## Checks",
        "",
    ]
    lines += [
        f"- [{'x' if c.get('passed') else ' '}] {c['name']}: {c.get('measured')} {c.get('unit', '')} "
        f"{c.get('op')} {c.get('limit')}"
        for c in verdict["checks"]
    ] or ["- (none recorded)"]
    if verdict["reasons"]:
        lines += ["", "## Why FAILED", ""] + [f"- {r}" for r in verdict["reasons"]]
    release = verdict.get("awaiting_approval")
    if release:
        lines += [
            "",
            "## Awaiting approval",
            "",
            f"- {release['service']}: {release['stable_version']} -> {release['candidate_version']} "
            f"in {release['environment']}",
            '- sign: `clinops approve <this bundle> --meaning "approved for promotion" --key <your key>`',
        ]
    if signatures:
        lines += ["", "## Electronic signatures", ""] + [f"- {s}" for s in signatures]
    return "\n".join(lines) + "\n"


# -- the pipeline ------------------------------------------------------------------------------------
def run(
    runbook: str | Path,
    settings: Settings,
    *,
    given: Mapping[str, Any] | None = None,
    cli: Mapping[str, str] | None = None,
    target: str | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> RunResult:
    """Validate, execute, gate and seal one runbook; returns the verdict and the bundle path.

    ``given`` are typed values (a YAML file), ``cli`` are ``-p`` strings (they win), ``target``
    is ``--target`` (sets the runbook's ``target`` parameter when it declares one).
    Raises ParameterError/ConfigError before anything runs.
    """
    import nbformat

    # 1. load and validate: nothing runs and nothing is written before this succeeds
    path = resolve_runbook(runbook, settings)
    nb = load_runbook(path)
    decls = P.parse_notebook(nb)
    cli = dict(cli or {})
    given = dict(given or {})
    if target is not None and "target" in decls:
        explicit = cli.get("target", given.get("target"))
        if explicit is not None and str(explicit) != target:
            raise ParameterError("target", f"--target {target} contradicts the parameter value {explicit!r}")
        cli["target"] = target
    values = P.validate(decls, given, cli)
    check_declared({k: str(v) for k, v in values.items() if decls[k].secret})
    effective = {n: values.get(n, d.default) for n, d in decls.items()}
    run_target = str(effective.get("target", target or settings.target))
    archive = Path(out) if out is not None else settings.evidence_dir
    check_out_dir(archive)
    _validate_with_runbook_rules(nb, effective, settings.with_(target=run_target))
    _preflight(nb, effective, settings)
    if settings.signing_key is not None:
        from ..evidence.attest import load_private_key

        load_private_key(settings.signing_key)  # a bad key is a config error, found before running
    _check_kernel()
    name = path.stem

    # 2. run in a scratch dir outside the archive
    run_id = uuid.uuid4().hex[:12]
    started = utc_now()
    _sweep_stale_scratch(Path(tempfile.gettempdir()))
    scratch = Path(tempfile.mkdtemp(prefix=f"clinops-run-{run_id}-"))
    (scratch / "owner").write_text(f"{os.getpid()} {_process_start(os.getpid())}\n")
    interruption = Interruption()
    with contextlib.ExitStack() as cleanup:
        # signals are handled until the bundle is sealed; the scratch dir goes first on the way out
        cleanup.enter_context(interruption.handling_signals())
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        artifacts = scratch / "artifacts"
        staging = scratch / "bundle"
        artifacts.mkdir()
        staging.mkdir()
        nb, injected = _parameterize(nb, decls, values)
        env = {
            "CLINOPS_ARTIFACT_DIR": str(artifacts),
            "CLINOPS_RUN_ID": run_id,
            "PLOTLY_RENDERER": "plotly_mimetype",  # data only: the library is the bundle's assets/ copy
            "CLINOPS_TARGET": run_target,
        }
        env |= {SECRET_ENV_PREFIX + k.upper(): str(v) for k, v in values.items() if decls[k].secret}
        executed = scratch / "executed.ipynb"
        failed_cell = _execute(nb, executed, path.parent, progress, env, injected, interruption)
        interrupted = _interruption_reason(interruption, injected)
        if interrupted:
            interrupted = "; ".join(
                [interrupted, *_abort_after_interruption(nb, effective, settings.with_(target=run_target))]
            )
        ended = utc_now()
        if executed.exists():
            shutil.copyfile(executed, staging / "notebook.ipynb")
        else:  # the kernel never started: keep the parameterized input as what was attempted
            nbformat.write(nb, str(staging / "notebook.ipynb"))
        for part in ("data", ASSETS_DIR):
            if (artifacts / part).is_dir():
                shutil.copytree(artifacts / part, staging / part)

        # 3. gate, then build the human-readable files from redacted inputs
        secret_values = {k: str(v) for k, v in values.items() if decls[k].secret and v}
        gate = SecretGate.for_run(secret_values, artifacts / "secrets.jsonl", os.environ)
        gate.trusted_sha256.add(asset_sha256())
        findings = gate.sweep(staging)
        signatures = _signature_lines(staging)
        render_html(staging / "notebook.ipynb", staging / "notebook.html", signatures)
        findings += gate.sweep(staging)
        checks = [
            {k: gate.redact_text(v)[0] if isinstance(v, str) else v for k, v in c.items()}
            for c in _read_checks(artifacts / "checks.jsonl")
        ]
        record = run_record(
            runbook=name,
            run_id=run_id,
            target=run_target,
            started=started,
            ended=ended,
            project_root=settings.project_root,
            operator=settings.operator,
            kernel=KERNEL,
        )
        record["runbook_path"] = str(path)
        _write_json(
            staging / "parameters.json",
            {
                "given": sorted(values),
                "values": P.redacted(decls, effective),
                "declared": {n: d.describe() for n, d in decls.items()},
            },
        )
        _write_json(staging / "run-record.json", record)
        for _ in range(3):  # the verdict quotes error text: gate it until nothing new is found
            verdict = _verdict(failed_cell, checks, findings, gate, interrupted)
            if (staging / "data" / "release.json").exists():
                verdict["awaiting_approval"] = json.loads((staging / "data" / "release.json").read_text())
            _write_json(staging / "verdict.json", verdict)
            (staging / "SUMMARY.md").write_text(_summary(record, verdict, signatures), encoding="utf-8")
            new = gate.sweep(staging)
            if not new:
                break
            findings += new

        # 4. seal
        bundle = seal(
            staging,
            archive,
            runbook=name,
            run_id=run_id,
            started=started,
            verdict=verdict,
            signing_key=settings.signing_key,
            gate=gate,
        )
    return RunResult(
        verdict=verdict["verdict"],
        bundle=bundle,
        run_id=run_id,
        failed_cell=verdict["failed_cell"],
        failed_checks=[c["name"] for c in checks if not c.get("passed")],
        secret_findings=findings,
        interrupted_by=interruption.signum,
        awaiting_approval=verdict.get("awaiting_approval"),
    )


def run_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops run``: 0 PASSED, 1 FAILED (bundle written), 2 bad input (nothing run)."""
    given = load_parameters_file(args.parameters_file) if getattr(args, "parameters_file", None) else {}
    cli: dict[str, str] = {}
    for name, value in getattr(args, "parameter", []) or []:
        if name in cli:
            raise ParameterError(name, "given twice with -p (which one did you mean?)")
        cli[name] = value
    out = Path(args.out) if getattr(args, "out", None) else None
    progress = not getattr(args, "no_progress", False)
    print(
        f"clinops: running {args.runbook} (target {getattr(args, 'target', None) or settings.target})",
        file=sys.stderr,
    )
    result = run(
        args.runbook,
        settings,
        given=given,
        cli=cli,
        target=getattr(args, "target", None),
        out=out,
        progress=progress,
    )
    print(f"verdict: {result.verdict}" + (" (AWAITING_APPROVAL)" if result.awaiting_approval else ""))
    if result.failed_cell:
        c = result.failed_cell
        print(f"  failed cell {c['index']} (In [{c['execution_count']}]): {c['ename']}: {c['evalue']}")
    for name in result.failed_checks:
        print(f"  failed check: {name}")
    for finding in result.secret_findings:
        print(f"  secret gate: {finding} (redacted)")
    print(f"bundle: {result.bundle}")
    if result.interrupted_by is not None:
        return 128 + result.interrupted_by
    return 0 if result.passed else 1
