"""``clinops cluster build|create|delete|status --provider debian``.

The parser is added by :func:`add_parser` (called by the CLI package). ``build`` is what
``scripts/setup-cluster.sh`` runs; ``create`` builds first when the cache is cold. Exit status as
everywhere: 0 done, 1 failure (the message names the component or build step and its log file),
2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..clusters.debian.build import BuildCache, build_all, missing_build_prerequisites
from ..clusters.debian.cluster import ClusterConfig, DebianCluster
from ..clusters.debian.images import ImageBuilder, chart_references
from ..config import Settings
from ..exceptions import ConfigError

__all__ = ["PROVIDERS", "add_parser", "cluster_from_cli", "config_from_settings"]

PROVIDERS = ("debian",)


def _progress(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``cluster`` to a subparsers object; the caller sets ``func``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "cluster",
        help="a real single-node Kubernetes from Debian packages (no Docker): build, create, delete",
    )
    p.add_argument("action", choices=("build", "create", "delete", "status"))
    p.add_argument("--provider", choices=PROVIDERS, default="debian")
    p.add_argument("--no-rollouts", action="store_true", help="do not build/run the Argo Rollouts controller")
    p.add_argument("--json", action="store_true", help="status/create: print JSON")
    p.add_argument(
        "--images",
        nargs="?",
        const="all",
        default=None,
        metavar="SERVICE,...",
        help="build: also the project's service images (buildah; cached by their inputs): "
        "all of them, or the named services/ folders",
    )
    return p


def config_from_settings(settings: Settings, *, rollouts: bool = True) -> ClusterConfig:
    """One cluster per machine: its folder and ports are fixed (see ClusterPorts), not per checkout;
    the build cache is ``CLINOPS_CACHE_DIR`` (default /var/cache/clinops)."""
    return ClusterConfig(rollouts=rollouts, cache=BuildCache(settings.cache_dir))


def cluster_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    if args.provider not in PROVIDERS:
        raise ConfigError(f"unknown cluster provider {args.provider!r}; known: {', '.join(PROVIDERS)}")
    rollouts = not args.no_rollouts
    config = config_from_settings(settings, rollouts=rollouts)
    cluster = DebianCluster(config, progress=_progress)
    if args.action == "build":
        references: dict[str, str] = {}
        if args.images:  # bad input is refused before anything is built
            references = chart_references(settings.project_root, settings.environment)
            if args.images != "all":
                wanted = [s.strip() for s in args.images.split(",") if s.strip()]
                unknown = sorted(set(wanted) - set(references))
                if unknown or not wanted:
                    raise ConfigError(f"--images: no image for {unknown}; known: {', '.join(references)}")
                references = {k: v for k, v in references.items() if k in wanted}
        missing = missing_build_prerequisites(rollouts=rollouts)
        if missing:
            _progress("missing: " + "; ".join(missing))
        built = build_all(
            BuildCache(config.cache.root), progress=_progress, rollouts=rollouts, prometheus=True
        )
        for r in built:
            how = "cached" if r.cached else f"built in {r.seconds:.0f}s"
            print(f"{r.what} {r.version}: {how} (log {r.log_file})")
        if references:
            builder = ImageBuilder(settings.project_root, config.cache.root, progress=_progress)
            for image in builder.build(references):
                how = "cached" if image.cached else f"built in {image.seconds:.0f}s"
                print(f"image {image.reference}: {how} ({image.archive})")
        return 0
    if args.action == "create":
        info = cluster.create()
        if args.json:
            print(json.dumps(info.to_json(), indent=2))
        else:
            print(
                f"cluster ready: Kubernetes {info.kubernetes_version} on node {info.node} ({info.node_ip}), "
                f"node Ready {info.seconds_to_ready:.1f}s after start; Argo Rollouts controller: "
                f"{'running' if info.rollouts_controller else 'not started'}"
            )
            print(f"use it:  export KUBECONFIG={info.kubeconfig}")
            print("         clinops run runbooks/00-provision.ipynb --target kubeconfig")
        return 0
    if args.action == "delete":
        left = cluster.delete()
        if left:
            print("cluster stopped, but left behind:\n  " + "\n  ".join(left), file=sys.stderr)
            return 1
        print(f"cluster deleted; no process, mount, iptables rule, bridge or netns left ({config.root})")
        return 0
    states = cluster.status()
    if args.json:
        print(json.dumps([s.__dict__ for s in states], indent=2))
    else:
        for s in states:
            print(
                f"{s.name:24} {'healthy' if s.healthy else 'DOWN':8} pid={s.pid or '-':<8} {s.detail}"
                f"  (log {s.log_file})"
            )
    return 0 if states and all(s.healthy for s in states) else 1
