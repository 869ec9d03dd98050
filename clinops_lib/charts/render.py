"""Rendering and linting the charts with the Helm SDK (``helm_python``: Helm v4 behind ctypes, no binary).

``render`` and ``lint`` return what Helm itself produces; every third-party dependency absent from
``charts/`` is switched off explicitly (:func:`~clinops_lib.charts.values.missing_dependencies`), so
the offline render covers exactly the project's own templates. ``chart_from_cli`` backs
``clinops chart render|lint``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..config import Settings
from ..exceptions import ChartError
from .values import (
    CHART_NAME,
    GITOPS_CHART_NAME,
    RELEASE_NAME,
    _check_env,
    _load_yaml,
    _merge,
    chart_dir,
    env_values,
    missing_dependencies,
)

__all__ = [
    "chart_from_cli",
    "lint",
    "render",
    "render_gitops",
    "render_raw",
    "to_yaml",
]


# -- the Helm SDK half -----------------------------------------------------------------------
def _helm() -> Any:
    try:
        import helm_python
    except ImportError as e:  # pragma: no cover - environment problem
        raise ChartError("helm_python (PyPI helm-python-sdk) is not installed") from e
    return helm_python


def _render_values(env: str, root: Path | None) -> dict[str, Any]:
    """User values for the umbrella: env values with every absent third-party chart switched off."""
    values = env_values(env, root)
    for dep in missing_dependencies(root):
        cond = str(dep.get("condition") or f"{dep['name']}.enabled").split(",")[0].strip()
        node = values.setdefault(dep["level"], {})
        *path, leaf = cond.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = False
    return values


def _parse_manifests(rendered: Mapping[str, str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for source in sorted(rendered):
        if not source.endswith((".yaml", ".yml")) or source.endswith("NOTES.txt"):
            continue
        try:
            docs = list(yaml.safe_load_all(rendered[source]))
        except yaml.YAMLError as e:
            raise ChartError(f"Helm rendered invalid YAML in {source}: {e}") from e
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise ChartError(f"{source} rendered something that is not a Kubernetes object: {doc!r:.200}")
            doc.setdefault("metadata", {}).setdefault("annotations", {})
            doc["metadata"]["annotations"].setdefault("clinops.io/source", source)
            objects.append(doc)
    return objects


def render_raw(env: str, root: Path | None = None, name: str = CHART_NAME,
               values: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Helm's own output: template path -> rendered text (offline, no cluster)."""
    _check_env(env)
    helm = _helm()
    path = chart_dir(root, name)
    if values is None:
        values = _render_values(env, root) if name == CHART_NAME else _gitops_values(env, root)
    try:
        with helm.Chart.load(str(path)) as chart:
            rendered: dict[str, str] = chart.render(dict(values), name=RELEASE_NAME,
                                                    namespace="clinops-system", is_install=True)
    except helm.HelmError as e:
        raise ChartError(f"helm render of {path} ({env}) failed: {e}") from e
    return rendered


def render(env: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Every object the umbrella chart renders for ``env``, parsed.

    Each object carries annotation ``clinops.io/source`` naming its template (added here,
    not by Helm) so a failing check can say where an object came from.
    """
    return _parse_manifests(render_raw(env, root))


def _gitops_values(env: str, root: Path | None) -> dict[str, Any]:
    cdir = chart_dir(root, GITOPS_CHART_NAME)
    return _merge(_load_yaml(cdir / "values.yaml"), _load_yaml(cdir / f"values-{env}.yaml"))


def render_gitops(env: str, root: Path | None = None) -> list[dict[str, Any]]:
    """The Argo CD AppProject and app-of-apps Applications for ``env``, parsed."""
    return _parse_manifests(render_raw(env, root, name=GITOPS_CHART_NAME))


def lint(env: str, root: Path | None = None, name: str = CHART_NAME,
         strict: bool = False) -> list[str]:
    """Helm lint findings for ``env`` as ``"SEVERITY path: message"`` strings (empty = clean).

    Severity INFO findings are dropped; a missing third-party dependency is reported as a
    WARNING by Helm (they are pinned in Chart.yaml but not vendored).
    """
    _check_env(env)
    helm = _helm()
    path = chart_dir(root, name)
    values = _render_values(env, root) if name == CHART_NAME else _gitops_values(env, root)
    try:
        report = helm.lint(str(path), values, strict=strict, namespace="clinops-system",
                           with_subcharts=True)
    except helm.HelmError as e:
        raise ChartError(f"helm lint of {path} ({env}) failed to run: {e}") from e
    severity = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    findings = [f"{severity.get(m.get('severity', 0), '?')} {m.get('path', '')}: {m.get('error', '')}"
                for m in report.get("messages", []) if m.get("severity") != 1]
    findings += [f"ERROR {path}: {e}" for e in report.get("errors", [])]
    return findings


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream (what ``kubectl apply -f`` and checkov read)."""
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objects)


def chart_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops chart render|lint --env E [--out DIR]``."""
    env = getattr(args, "env", None) or settings.environment
    if args.action == "lint":
        findings = lint(env, settings.project_root) + lint(env, settings.project_root, GITOPS_CHART_NAME)
        for f in findings:
            print(f)
        errors = [f for f in findings if f.startswith("ERROR")]
        warnings = len(findings) - len(errors)
        print(f"lint {env}: {len(errors)} error(s), {warnings} warning(s)", file=sys.stderr)
        return 1 if errors else 0
    objects = render(env, settings.project_root)
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
