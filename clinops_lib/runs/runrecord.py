"""The run record: who ran what, where, when, from which commit, with which tool versions.

Part 11 evidence must be attributable and time-stamped; an auditor reading a bundle years
later needs to know the exact code (commit, and whether the tree had uncommitted changes)
and the versions of every tool that could have changed the outcome.
"""

from __future__ import annotations

import getpass
import platform
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "git_state", "run_record", "tool_versions", "utc_now"]

#: Python distributions whose versions go into every record (when installed).
PACKAGES = (
    "clinops",
    "papermill",
    "nbclient",
    "nbconvert",
    "nbformat",
    "ipykernel",
    "plotly",
    "pandas",
    "kubernetes",
    "boto3",
    "helm-python-sdk",
    "cryptography",
)
#: Binaries the local and Kubernetes targets drive, with the flag that prints their version.
BINARIES = {
    "haproxy": "-v",
    "prometheus": "--version",
    "redis-server": "--version",
    "kind": "version",
    "kubectl": "version --client",
    "helm": "version --short",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip()


def git_state(root: Path) -> dict[str, Any]:
    """Commit and dirtiness of the checkout the runbook came from (None outside git)."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=root)
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def tool_versions() -> dict[str, str]:
    """Python and package versions, plus the first line of each available binary's version."""
    versions = {"python": platform.python_version()}
    for dist in PACKAGES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    for binary, flag in BINARIES.items():
        path = shutil.which(binary)
        if path:
            out = _run([path, *flag.split()])
            if out:
                versions[binary] = out.splitlines()[0][:200]
    return versions


def run_record(
    *,
    runbook: str,
    run_id: str,
    target: str,
    started: datetime,
    ended: datetime,
    project_root: Path,
    operator: str | None,
    kernel: str,
) -> dict[str, Any]:
    """Everything that identifies a run, as a JSON-ready dict."""
    return {
        "runbook": runbook,
        "run_id": run_id,
        "target": target,
        "operator": operator or getpass.getuser(),
        "host": socket.gethostname(),
        "started_utc": iso(started),
        "ended_utc": iso(ended),
        "duration_seconds": round((ended - started).total_seconds(), 3),
        "git": git_state(project_root),
        "kernel": kernel,
        "python_executable": sys.executable,
        "versions": tool_versions(),
    }
