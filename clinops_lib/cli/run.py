"""``clinops run RUNBOOK``: flags to :func:`clinops_lib.runs.runner.run`, the result to the terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Settings
from ..exceptions import ParameterError
from ..runs.runner import load_parameters_file, run

__all__ = ["run_from_cli"]


def run_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops run``: 0 PASSED, 1 FAILED (bundle written), 2 bad input (nothing run),
    128+N interrupted by signal N (FAILED bundle sealed, traffic back on stable)."""
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
        return 128 + result.interrupted_by  # the shell's convention for death by signal N
    return 0 if result.passed else 1
