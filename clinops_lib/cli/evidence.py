"""``clinops evidence verify|push|list``: the archive's checks, its upload and its listing, printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Settings
from ..evidence.attest import expected_public_keys
from ..evidence.verify import list_runs, verify
from ..exceptions import ConfigError

__all__ = ["list_from_cli", "push_from_cli", "verify_from_cli"]


def verify_from_cli(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``clinops evidence verify PATH [--public-key PEM] [--remote]``: 0 intact, 1 with each
    problem named. The expected keys come from ``CLINOPS_VERIFY_KEYS`` (settings) plus
    ``--public-key``; approvals are checked against the approvers registry; ``--remote`` also
    compares with the write-once bucket (bundles missing on either side, truncated tail)."""
    settings = settings or Settings.from_env()
    public_key = None
    if getattr(args, "public_key", None):
        try:
            public_key = Path(args.public_key).read_bytes()
        except OSError as e:
            raise ConfigError(f"--public-key {args.public_key}: cannot be read ({e})") from e
    registry = None
    if settings.approvers_file.exists():
        from ..evidence.approvals import load_registry

        registry = load_registry(settings.approvers_file)
    report = verify(
        Path(args.path),
        public_key=public_key,
        expected_keys=expected_public_keys(settings.verify_keys),
        registry=registry,
    )
    if getattr(args, "remote", False):
        from ..evidence.remote import compare, remote_from_settings

        remote = remote_from_settings(settings, bucket=args.bucket, prefix=args.prefix or "")
        report.problems.extend(compare(Path(args.path), remote))
    if report.ok:
        print(f"OK: {report.bundles} bundle(s) intact in {args.path}")
        return 0
    for problem in report.problems:
        print(f"FAIL: {problem}")
    print(f"{len(report.problems)} problem(s) in {args.path}")
    return 1


def push_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops evidence push [ARCHIVE]``: upload to the write-once bucket; 1 on a conflict."""
    from ..evidence.remote import push, remote_from_settings

    archive = Path(args.path) if getattr(args, "path", None) else settings.evidence_dir
    remote = remote_from_settings(settings, bucket=args.bucket, prefix=args.prefix or "")
    print(f"pushing {archive} to s3://{remote.bucket}/{remote.prefix}", file=sys.stderr)
    report = push(archive, remote, progress=lambda m: print(m, file=sys.stderr, flush=True))
    n_up, n_conflicts = len(report.uploaded), len(report.conflicts)
    print(f"{n_up} uploaded, {report.skipped} already there, {n_conflicts} conflict(s)")
    for c in report.conflicts:
        print(f"CONFLICT: {c}")
    return 1 if report.conflicts else 0


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
