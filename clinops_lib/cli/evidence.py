"""``clinops evidence verify|list``: the archive's checks and listing, printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Settings
from ..evidence.verify import list_runs, verify
from ..exceptions import ConfigError

__all__ = ["list_from_cli", "verify_from_cli"]


def verify_from_cli(args: argparse.Namespace) -> int:
    """``clinops evidence verify PATH [--public-key PEM]``: 0 intact, 1 with each problem named."""
    public_key = None
    if getattr(args, "public_key", None):
        try:
            public_key = Path(args.public_key).read_bytes()
        except OSError as e:
            raise ConfigError(f"--public-key {args.public_key}: cannot be read ({e})") from e
    report = verify(Path(args.path), public_key=public_key)
    if report.ok:
        print(f"OK: {report.bundles} bundle(s) intact in {args.path}")
        return 0
    for problem in report.problems:
        print(f"FAIL: {problem}")
    print(f"{len(report.problems)} problem(s) in {args.path}")
    return 1


def list_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops evidence list [PATH]``: one line per run."""
    archive = Path(args.path) if getattr(args, "path", None) else settings.evidence_dir
    rows = list_runs(archive)
    if not rows:
        print(f"no evidence bundles in {archive}")
        return 0
    for r in rows:
        print(f"{r['runbook']:<28} {r['started_utc']:<25} {r['target']:<10} {r['verdict']:<7} {r['path']}")
    return 0
