"""Rendering and linting the charts with the Helm SDK (``helm_python``: Helm v4 behind ctypes, no binary).

``render`` and ``lint`` return what Helm itself produces; every third-party dependency absent from
``charts/`` is switched off explicitly (:func:`~clinops_lib.charts.values.missing_dependencies`), so
the offline render covers exactly the project's own templates. ``clinops chart render|lint`` is
:mod:`clinops_lib.cli.chart`.

The shared helpers live in the library chart ``charts/clinops-common`` (``type: library``), a
``file://`` dependency of the umbrella and of every level subchart. ``build_dependencies`` packs
it into each chart's ``charts/`` folder, as ``helm dependency build`` does for a ``file://``
repository (without fetching the third-party ones); ``render``, ``lint`` and ``level_chart``
call it first, so a fresh clone renders and installs without a separate step.

Renders take a Kubernetes version (``kube_version``; the charts choose API versions from it, as
bitnami's ``common`` chart does): offline it is an option of the render, at install Helm takes it
from the API server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import ChartError, ConfigError
from .values import (
    CHART_NAME,
    GITOPS_CHART_NAME,
    LEVELS,
    RELEASE_NAME,
    _check_env,
    _is_local,
    _load_yaml,
    _merge,
    chart_dir,
    env_values,
    missing_dependencies,
)

__all__ = [
    "build_dependencies",
    "installable_level_chart",
    "level_chart",
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


def _render_values(env: str, root: Path | None, profiles: tuple[str, ...] = (),
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """User values for the umbrella: env values with every absent third-party chart switched off."""
    values = env_values(env, root, profiles, overrides)
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
            # Third-party charts render empty maps as null (``annotations:``).
            meta = doc["metadata"] = doc.get("metadata") or {}
            meta["annotations"] = meta.get("annotations") or {}
            meta["annotations"].setdefault("clinops.io/source", source)
            objects.append(doc)
    return objects


_KUBE_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


def _kube_version(text: str) -> str:
    """``"1.20.2"``/``"v1.20"`` -> ``"v1.20.2"``/``"v1.20.0"`` (what Helm's capabilities take)."""
    m = _KUBE_VERSION.match(text.strip())
    if not m:
        raise ConfigError(f"Kubernetes version {text!r} is not of the form 1.20.2")
    return f"v{m[1]}.{m[2]}.{m[3] or 0}"


def _render_chart(helm: Any, chart: Any, values: Mapping[str, Any],
                  kube_version: str | None) -> dict[str, str]:
    """Helm's offline render with the release options of an install, for ``kube_version``.

    helm-python-sdk 0.2.2's ``Chart.render`` does not forward the Kubernetes version although the
    C library under it (helm-c-sdk's ``helm_render``) takes ``kube_version`` in its JSON options,
    the SDK equivalent of ``helm template --kube-version``; so the call goes to the C function
    directly. Without a version Helm uses its default capabilities (a current release).
    """
    opts: dict[str, Any] = {"name": RELEASE_NAME, "namespace": "clinops-system", "is_install": True}
    if kube_version is None:
        rendered: dict[str, str] = chart.render(dict(values), **opts)
        return rendered
    opts["kube_version"] = _kube_version(kube_version)
    payload = helm._native.call_string("helm_render", chart._raw(), json.dumps(dict(values)),
                                       json.dumps(opts))
    out: dict[str, str] = json.loads(payload)
    return out


def render_raw(env: str, root: Path | None = None, name: str = CHART_NAME,
               values: Mapping[str, Any] | None = None, *, profiles: tuple[str, ...] = (),
               overrides: Mapping[str, Any] | None = None, kube_version: str | None = None) -> dict[str, str]:
    """Helm's own output: template path -> rendered text (offline, no cluster)."""
    _check_env(env)
    helm = _helm()
    path = chart_dir(root, name)
    if values is None:
        values = (_render_values(env, root, profiles, overrides) if name == CHART_NAME
                  else _gitops_values(env, root))
    if name == CHART_NAME:
        build_dependencies(root)
    where = "+".join([env, *profiles]) + (f", Kubernetes {kube_version}" if kube_version else "")
    try:
        with helm.Chart.load(str(path)) as chart:
            return _render_chart(helm, chart, values, kube_version)
    except helm.HelmError as e:
        raise ChartError(f"helm render of {path} ({where}) failed: {e}") from e


def render(env: str, root: Path | None = None, *, profiles: tuple[str, ...] = (),
           overrides: Mapping[str, Any] | None = None,
           kube_version: str | None = None) -> list[dict[str, Any]]:
    """Every object the umbrella chart renders for ``env`` (with ``profiles``, for ``kube_version``;
    default: Helm's current version), parsed.

    Each object carries annotation ``clinops.io/source`` naming its template (added here,
    not by Helm) so a failing check can say where an object came from.
    """
    return _parse_manifests(render_raw(env, root, profiles=profiles, overrides=overrides,
                                       kube_version=kube_version))



# -- the library chart as a dependency ----------------------------------------------------------
def _newest_mtime(path: Path) -> float:
    return max(p.stat().st_mtime for p in [path, *path.rglob("*")])


def build_dependencies(root: Path | None = None) -> list[Path]:
    """Pack every ``file://`` dependency (the library chart) into its dependents' ``charts/``.

    What ``helm dependency build`` does for a ``file://`` repository, without fetching the
    third-party dependencies: ``<name>-<version>.tgz`` beside the level subcharts, rebuilt when
    the source is newer, replaced atomically (concurrent renders never read half an archive).
    A declared version that the source chart does not carry is an error. Returns the archives.
    """
    helm = _helm()
    umbrella = chart_dir(root)
    built: list[Path] = []
    for cdir in [umbrella, *(umbrella / "charts" / level for level in LEVELS)]:
        for dep in _load_yaml(cdir / "Chart.yaml").get("dependencies") or []:
            if not _is_local(dep):
                continue
            source = (cdir / str(dep["repository"])[len("file://"):]).resolve()
            meta = _load_yaml(source / "Chart.yaml")
            if meta.get("name") != dep.get("name") or str(meta.get("version")) != str(dep.get("version")):
                raise ChartError(f"{cdir / 'Chart.yaml'}: dependency {dep.get('name')} {dep.get('version')} "
                                 f"but {source} is {meta.get('name')} {meta.get('version')}")
            target = cdir / "charts" / f"{dep['name']}-{dep['version']}.tgz"
            if not target.exists() or target.stat().st_mtime < _newest_mtime(source):
                target.parent.mkdir(parents=True, exist_ok=True)
                # Packed beside the chart trees, not in them: Helm would load a half-written file
                # in a charts/ folder as a (broken) subchart in a concurrent render.
                with tempfile.TemporaryDirectory(dir=umbrella.parent, prefix=".build-") as tmp:
                    try:
                        with helm.Chart.load(str(source)) as chart:
                            archive = Path(chart.save(tmp))
                    except helm.HelmError as e:
                        raise ChartError(f"packing {source} for {cdir.name} failed: {e}") from e
                    os.replace(archive, target)
            built.append(target)
    return built


def level_chart(level: str, root: Path | None = None) -> Path:
    """A level subchart's directory, its library dependency built: what ``helm install`` takes."""
    if level not in LEVELS:
        raise ChartError(f"unknown level subchart {level!r}; known: {', '.join(LEVELS)}")
    build_dependencies(root)
    return chart_dir(root) / "charts" / level




def installable_level_chart(level: str, values: Mapping[str, Any], dest: Path,
                            root: Path | None = None) -> Path:
    """A copy of a level subchart under ``dest`` that ``helm install`` accepts with ``values``.

    Helm's install refuses a chart whose Chart.yaml declares a dependency missing from its
    ``charts/`` folder, even one its ``condition`` switches off (the render path switches absent
    ones off instead, :func:`_render_values`). The third-party charts are pinned, never vendored,
    so the copy's Chart.yaml drops each absent dependency that ``values`` disables; an absent one
    that ``values`` *enables* stays, and Helm's install names it.
    """
    src = level_chart(level, root)
    absent = set()
    for dep in (d for d in missing_dependencies(root) if d["level"] == level):
        cond = str(dep.get("condition") or f"{dep['name']}.enabled").split(",")[0].strip()
        node: Any = values
        for part in cond.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is False:
            absent.add(dep["name"])
    out = dest / level
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    chart = yaml.safe_load((out / "Chart.yaml").read_text())
    chart["dependencies"] = [d for d in chart.get("dependencies") or [] if d.get("name") not in absent]
    (out / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    (out / "Chart.lock").unlink(missing_ok=True)
    return out


def _gitops_values(env: str, root: Path | None) -> dict[str, Any]:
    cdir = chart_dir(root, GITOPS_CHART_NAME)
    return _merge(_load_yaml(cdir / "values.yaml"), _load_yaml(cdir / f"values-{env}.yaml"))


def render_gitops(env: str, root: Path | None = None) -> list[dict[str, Any]]:
    """The Argo CD AppProject and app-of-apps Applications for ``env``, parsed."""
    return _parse_manifests(render_raw(env, root, name=GITOPS_CHART_NAME))


def lint(env: str, root: Path | None = None, name: str = CHART_NAME,
         strict: bool = False, *, profiles: tuple[str, ...] = (),
         kube_version: str | None = None) -> list[str]:
    """Helm lint findings for ``env`` as ``"SEVERITY path: message"`` strings (empty = clean).

    Severity INFO findings are dropped; a missing third-party dependency is reported as a
    WARNING by Helm (they are pinned in Chart.yaml but not vendored).
    """
    _check_env(env)
    helm = _helm()
    path = chart_dir(root, name)
    values = _render_values(env, root, profiles) if name == CHART_NAME else _gitops_values(env, root)
    if name == CHART_NAME:
        build_dependencies(root)
    try:
        report = helm.lint(str(path), values, strict=strict, namespace="clinops-system", with_subcharts=True,
                           kube_version=_kube_version(kube_version) if kube_version else None)
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
