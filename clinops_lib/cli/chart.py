"""``clinops chart render|lint --env E``: the charts through the Helm SDK."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..charts.render import lint, render, render_gitops, to_yaml
from ..charts.values import CHART_NAME, GITOPS_CHART_NAME
from ..config import Settings

__all__ = ["chart_from_cli"]


def chart_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops chart render|lint --env E [--profile P ...] [--kube-version V] [--out DIR]``."""
    env = getattr(args, "env", None) or settings.environment
    chosen = tuple(getattr(args, "profile", None) or ())
    kube_version = getattr(args, "kube_version", None)
    if args.action == "lint":
        findings = (lint(env, settings.project_root, profiles=chosen, kube_version=kube_version)
                    + lint(env, settings.project_root, GITOPS_CHART_NAME, kube_version=kube_version))
        for f in findings:
            print(f)
        errors = [f for f in findings if f.startswith("ERROR")]
        warnings = len(findings) - len(errors)
        print(f"lint {env}: {len(errors)} error(s), {warnings} warning(s)", file=sys.stderr)
        return 1 if errors else 0
    objects = render(env, settings.project_root, profiles=chosen, kube_version=kube_version)
    gitops = render_gitops(env, settings.project_root)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{CHART_NAME}-{env}.yaml").write_text(to_yaml(objects), encoding="utf-8")
        (out / f"{GITOPS_CHART_NAME}-{env}.yaml").write_text(to_yaml(gitops), encoding="utf-8")
        print(f"wrote {len(objects) + len(gitops)} objects to {out}", file=sys.stderr)
    else:
        sys.stdout.write(to_yaml(objects + gitops))
    return 0
