"""What a runbook hands to its evidence bundle: acceptance checks, tables, figures, secrets.

A runbook calls these from its cells; they write into the run's *artifact directory*,
which the runner passes to the kernel as ``CLINOPS_ARTIFACT_DIR``. When a notebook is
stepped through by hand in JupyterLab (no runner), artifacts go to a fresh temporary
directory, so interactive use never fails and never pollutes the archive.

Files written (read back by :mod:`clinops_lib.evidence` when sealing)::

    checks.jsonl      one acceptance check per line: name, measured, limit, op, passed, unit
    secrets.jsonl     values the run learned that must never be kept: read by the secret
                      gate, never copied into the bundle; the scratch dir is deleted after sealing
    data/<name>.csv   tables         data/<name>.html   figures (plotly, loading ../assets/)
    data/<name>.json  documents a tool produced, kept whole (a data-quality validation result)
    assets/plotly-<version>.min.js   the one copy of plotly.js every page of the bundle uses
"""

from __future__ import annotations

import json
import math
import operator
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ARTIFACT_DIR_VARIABLE, run_artifact_dir

__all__ = [
    "approval",
    "artifact_dir",
    "awaiting_approval",
    "check",
    "checks",
    "document",
    "figure",
    "require_all_checks",
    "secret",
    "table",
]

ENV_ARTIFACT_DIR = ARTIFACT_DIR_VARIABLE

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_fallback_dir: Path | None = None


def artifact_dir() -> Path:
    """The directory this run's artifacts go to (created on first use)."""
    global _fallback_dir
    given = run_artifact_dir()
    if given is not None:
        path = given
    else:
        if _fallback_dir is None:
            _fallback_dir = Path(tempfile.mkdtemp(prefix="clinops-interactive-"))
        path = _fallback_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    if not cleaned:
        raise ValueError(f"artifact name {name!r} has no usable characters")
    return cleaned


def check(name: str, measured: Any, limit: Any, op: str = "<=", unit: str = "") -> bool:
    """Record one acceptance check ``measured <op> limit`` and return whether it passed.

    A measurement of ``None`` or NaN never passes: no data is not evidence.
    """
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r}; use one of {', '.join(_OPS)}")
    no_data = measured is None or (isinstance(measured, float) and math.isnan(measured))
    passed = False if no_data else bool(_OPS[op](measured, limit))
    row = {"name": name, "measured": None if no_data else measured, "limit": limit, "op": op,
           "unit": unit, "passed": passed}
    with open(artifact_dir() / "checks.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
    return passed


def checks() -> list[dict[str, Any]]:
    """The checks recorded so far in this run."""
    path = artifact_dir() / "checks.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def require_all_checks() -> None:
    """Fail the notebook (and so the run) if any recorded check failed or none was recorded."""
    rows = checks()
    if not rows:
        raise AssertionError("no acceptance check was recorded: a run without checks proves nothing")
    failed = [r for r in rows if not r["passed"]]
    if failed:
        lines = [f"{r['name']}: measured {r['measured']} {r['unit']} not {r['op']} {r['limit']}"
                 for r in failed]
        raise AssertionError("acceptance checks failed:\n  " + "\n  ".join(lines))


def table(name: str, df: Any) -> Path:
    """Keep a pandas DataFrame as ``data/<name>.csv``."""
    out = artifact_dir() / "data" / f"{_safe_name(name)}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out


def document(name: str, doc: Any) -> Path:
    """Keep a JSON-serialisable document whole as ``data/<name>.json`` (sorted keys, indented), for
    results whose own format an auditor's tools read (great-expectations' validation result)."""
    out = artifact_dir() / "data" / f"{_safe_name(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return out


def figure(name: str, fig: Any) -> Path:
    """Keep a plotly figure as ``data/<name>.html`` that opens offline: it loads plotly.js from
    the bundle's one copy ``../assets/plotly-<version>.min.js`` (written here on first use)."""
    from .plotly_assets import ASSETS_DIR, asset_name, write_asset

    out = artifact_dir() / "data" / f"{_safe_name(name)}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_asset(artifact_dir())
    fig.write_html(str(out), include_plotlyjs=f"../{ASSETS_DIR}/{asset_name()}", full_html=True)
    return out


def secret(value: str) -> str:
    """Tell the secret gate about a value the run learned (e.g. read from Secrets Manager).

    Returns the value unchanged so it can wrap a lookup: ``pw = secret(fetch())``. A value
    shorter than 8 characters raises ValueError: the gate could not find it reliably.
    """
    if value and len(value) < 8:
        raise ValueError(f"record.secret(): a {len(value)}-character value is too short to detect reliably")
    if value:
        with open(artifact_dir() / "secrets.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(value) + "\n")
    return value


def awaiting_approval(service: str, stable_version: str, candidate_version: str, environment: str) -> Path:
    """Say that this run proposes a release a person must approve: ``data/release.json``.

    ``clinops approve`` binds its signature to exactly these four values (and the bundle's
    manifest hash); the runner marks the run AWAITING_APPROVAL in its verdict and summary.
    """
    out = artifact_dir() / "data" / "release.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    release = {"service": service, "stable_version": stable_version,
               "candidate_version": candidate_version, "environment": environment}
    out.write_text(json.dumps(release, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def approval(path: Path) -> Path:
    """Keep a (verified) approval in this run's bundle: ``data/approvals/<file>``. Its signer's
    printed name, UTC time and meaning are shown in the bundle's HTML copy and SUMMARY.md."""
    src = Path(path)
    out = artifact_dir() / "data" / "approvals" / src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(src.read_bytes())
    return out
