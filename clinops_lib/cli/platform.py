"""``clinops up / status / down / abort / inventory``: the platform lifecycle from the command line.

Thin wrappers: parse the flags, ask :func:`~clinops_lib.targets.base.get_target` for the target,
print what happened as a table (or JSON). Exit 0 when everything asked for is healthy.

``status`` also shows every track of every service with its share of user traffic, and ``up``
names a canary left running (a drill that never finished) and offers ``clinops abort SERVICE``
(:mod:`clinops_lib.drills.abort`): a stray canary is never hidden behind "already up".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from ..catalog import level_names, opt_in_components, parse_levels
from ..config import Settings
from ..drills.abort import TrackRow, abort_release, services_of, stray_canaries, track_rows
from ..exceptions import ParameterError
from ..targets.base import ComponentStatus, get_target

__all__ = [
    "abort_from_cli",
    "down_from_cli",
    "format_tracks",
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


def format_tracks(rows: Sequence[TrackRow]) -> str:
    """SERVICE TRACK VERSION RUNNING WEIGHT, one line per track."""
    cells = [(r.service, r.track, r.version or "-", "yes" if r.running else "no",
              "?" if r.weight is None else f"{r.weight}%", r.note) for r in rows]
    header = ("SERVICE", "TRACK", "VERSION", "RUNNING", "WEIGHT", "")
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *cells])


def _warn_strays(rows: Sequence[TrackRow]) -> None:
    for r in stray_canaries(rows):
        share = "an unknown share of" if r.weight is None else f"{r.weight}% of"
        print(f"clinops: stray canary: {r.service} runs {r.version or '?'} on its canary track with {share} "
              f"user traffic (left by a drill that did not finish, unless one is running now); "
              f"`clinops abort {r.service}` sends all traffic to stable and stops it", file=sys.stderr)


def _unhealthy(statuses: Sequence[ComponentStatus]) -> list[ComponentStatus]:
    return [s for s in statuses if s.health in ("unhealthy", "stopped")]


def up_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    levels = parse_levels(getattr(args, "levels", None))  # bad input: ParameterError, exit 2
    named = getattr(args, "opt_in", None)
    opt_in = None if named is None else [n.strip() for n in named.split(",") if n.strip()]
    opt_in_components(levels, opt_in)  # bad input: ParameterError naming --with, exit 2, before anything
    target = get_target(settings)
    try:
        statuses = target.up(levels, opt_in=opt_in,
                             progress=lambda m: print(m, file=sys.stderr, flush=True))
        rows = track_rows(target)
    finally:
        target.close()
    print(format_table(statuses))
    _warn_strays(rows)
    return 1 if _unhealthy(statuses) else 0


def status_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    target = get_target(settings)
    try:
        statuses = target.status()
        rows = track_rows(target)
    finally:
        target.close()
    if getattr(args, "json", False):
        doc = {"components": status_rows(statuses), "tracks": [asdict(r) for r in rows]}
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(format_table(statuses))
        print()
        print(format_tracks(rows))
        _warn_strays(rows)
    return 1 if any(s.health == "unhealthy" for s in statuses) else 0


def abort_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops abort SERVICE``: all traffic to stable, then the canary (green) stopped."""
    target = get_target(settings)
    try:
        known = services_of(target)
        if args.service not in known:
            raise ParameterError("service", f"unknown service {args.service!r}; known: {', '.join(known)}")
        for line in abort_release(target, args.service):
            print(line)
        rows = [r for r in track_rows(target, [args.service])]
    finally:
        target.close()
    print(format_tracks(rows))
    return 0 if not stray_canaries(rows) else 1


def down_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    target = get_target(settings)
    try:
        target.down(purge=bool(getattr(args, "purge", False)))
    finally:
        target.close()
    print("down: every process stopped" + (" and state removed" if getattr(args, "purge", False) else ""))
    return 0


def inventory_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops inventory apply|drift|show``: the AWS inventory (apply = provision: terraform or boto3)."""
    from ..exceptions import InventoryError
    from ..inventory import drift, load_inventory, make_clients, provision

    action = args.action
    inv = load_inventory(env=settings.environment)
    if action == "show":
        for b in inv.buckets.values():
            print(f"bucket  {b.name}  versioning={b.versioning} sse={b.sse_algorithm} "
                  f"rules={len(b.lifecycle_rules)}")
        for q in inv.queues.values():
            print(f"queue   {q.name}  dlq={q.dlq_name} maxReceiveCount={q.max_receive_count}")
        for t in inv.topics.values():
            print(f"topic   {t.name}  -> {', '.join(inv.queues[s.queue].name for s in t.subscriptions)}")
        for s in inv.secrets.values():
            print(f"secret  {s.name}  {s.description}")
        return 0
    if action == "apply":
        report = provision(settings, progress=print)
        print(f"method: {report.method}; " + (report.apply.summary() if report.apply else "terraform apply"))
        for d in report.drift:
            print(f"drift: {d}")
        return 0 if report.in_sync else 1
    if action == "drift":
        diffs = drift(inv, make_clients(settings))
        for d in diffs:
            print(d)
        print(f"{len(diffs)} difference(s)")
        return 0 if not diffs else 1
    raise InventoryError(f"inventory action {action!r} unknown; use apply, drift or show")
