"""``clinops up / status / down / inventory``: the platform lifecycle from the command line.

Thin wrappers: parse the flags, ask :func:`~clinops_lib.targets.base.get_target` for the target,
print what happened as a table (or JSON). Exit 0 when everything asked for is healthy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from ..catalog import level_names, parse_levels
from ..config import Settings
from ..targets.base import ComponentStatus, get_target

__all__ = [
    "down_from_cli",
    "format_table",
    "inventory_from_cli",
    "status_from_cli",
    "status_rows",
    "up_from_cli",
]

COLUMNS = ("level", "component", "health", "version", "endpoint")


def status_rows(statuses: Sequence[ComponentStatus]) -> list[dict[str, object]]:
    """Rows for tables and JSON; the level is shown as ``"1 data ingestion"``."""
    names = level_names()
    rows = []
    for s in statuses:
        row = asdict(s)
        row["level_name"] = names.get(s.level, "")
        rows.append(row)
    return rows


def format_table(statuses: Sequence[ComponentStatus]) -> str:
    names = level_names()
    cells = [
        (f"{s.level} {names.get(s.level, '')}", s.component, s.health, s.version or "-", s.endpoint or "-")
        for s in statuses
    ]
    header = ("LEVEL", "COMPONENT", "HEALTH", "VERSION", "ENDPOINT")
    widths = [max(len(str(r[i])) for r in [header, *cells]) for i in range(len(header))]
    rows = [header, *cells]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _unhealthy(statuses: Sequence[ComponentStatus]) -> list[ComponentStatus]:
    return [s for s in statuses if s.health in ("unhealthy", "stopped")]


def up_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    levels = parse_levels(getattr(args, "levels", None))  # bad input: ParameterError, exit 2
    target = get_target(settings)
    try:
        statuses = target.up(levels, progress=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        target.close()
    print(format_table(statuses))
    return 1 if _unhealthy(statuses) else 0


def status_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    target = get_target(settings)
    try:
        statuses = target.status()
    finally:
        target.close()
    if getattr(args, "json", False):
        print(json.dumps(status_rows(statuses), indent=2, default=str))
    else:
        print(format_table(statuses))
    return 1 if any(s.health == "unhealthy" for s in statuses) else 0


def down_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    target = get_target(settings)
    try:
        target.down(purge=bool(getattr(args, "purge", False)))
    finally:
        target.close()
    print("down: every process stopped" + (" and state removed" if getattr(args, "purge", False) else ""))
    return 0


def inventory_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """Delegates to :mod:`clinops_lib.inventory` (apply = provision: terraform or boto3)."""
    from .. import inventory

    return int(inventory.inventory_from_cli(args.action, settings))
