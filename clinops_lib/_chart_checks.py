"""Checks over rendered manifests, shared by the chart tests and the runbooks.

Kept apart from ``clinops_lib.charts`` (which renders) because these only read parsed objects:
schema validation (core kinds with ``kubernetes-validate``, custom resources with the CRD
JSON Schemas in ``../shared/schemas/crds``), pod-spec extraction and label-selector matching.

Two Kubernetes versions are checked: a current one (``KUBERNETES_VERSION``, the schemas of the
locked ``kubernetes-validate``) and 1.20 (``OLDEST_KUBERNETES_VERSION``, the single-node cluster
built from Debian packages). The locked ``kubernetes-validate`` ships 1.25 and newer only, so
1.20's strict schemas come from kubernetes-validate 1.28.3's files, installed hash-pinned by
``scripts/setup.sh --tests`` under ``LEGACY_SCHEMA_ROOT`` (outside the checkout) and read here
with ``jsonschema`` as that release read them (Draft 7, ``_definitions.json`` references).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from .exceptions import ChartError

__all__ = [
    "KUBERNETES_VERSION",
    "LEGACY_SCHEMA_ROOT",
    "OLDEST_KUBERNETES_VERSION",
    "core_schema_errors",
    "crd_schema_dir",
    "crd_schema_errors",
    "is_custom_resource",
    "pod_templates",
    "schema_errors",
    "selector_matches",
]

#: Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.33.0"
#: The oldest Kubernetes the charts support (Chart.yaml kubeVersion floor; the Debian-built cluster).
OLDEST_KUBERNETES_VERSION = "1.20.2"
#: kubernetes-validate 1.28.3's files (the last release with 1.20 schemas), see scripts/setup.sh.
LEGACY_SCHEMA_ROOT = Path("/var/cache/clinops/kubernetes-validate/1.28.3") / "kubernetes_validate" / \
    "kubernetes-json-schema"

_CORE_SUFFIX = ".k8s.io"
_CUSTOM_GROUPS_WITH_K8S_SUFFIX = {"sparkoperator.k8s.io"}


def crd_schema_dir(root: Path) -> Path:
    """``../shared/schemas/crds`` relative to the project root; missing is an error, not a skip."""
    path = (root / ".." / "shared" / "schemas" / "crds").resolve()
    if not path.is_dir():
        raise ChartError(f"CRD schema folder missing: {path} "
                         "(kubeconform layout <group>/<kind>_<version>.json)")
    return path


def is_custom_resource(obj: dict[str, Any]) -> bool:
    """True for kinds whose schema comes from a CRD rather than from Kubernetes itself."""
    group, _, _ = str(obj.get("apiVersion", "")).rpartition("/")
    if not group or "." not in group:
        return False  # core ("v1") or built-in groups without dots (apps, batch, policy, autoscaling)
    return group in _CUSTOM_GROUPS_WITH_K8S_SUFFIX or not group.endswith(_CORE_SUFFIX)


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns + '/' if ns else ''}{meta.get('name')}"


@lru_cache(maxsize=64)
def _load_schema(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


def crd_schema_errors(obj: dict[str, Any], schema_dir: Path) -> list[str]:
    """Errors of one custom resource against its CRD schema (a missing schema is an error)."""
    import jsonschema

    group, _, version = obj["apiVersion"].rpartition("/")
    path = schema_dir / group / f"{obj['kind'].lower()}_{version}.json"
    if not path.is_file():
        return [f"{_name(obj)}: no schema {path.relative_to(schema_dir)}"]
    validator = jsonschema.Draft7Validator(_load_schema(str(path)))
    return [f"{_name(obj)}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)]


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.lstrip("v").split(".")[:2]
    return int(major), int(minor)


def legacy_schema_dir(version: str, root: Path = LEGACY_SCHEMA_ROOT) -> Path:
    """Strict schemas of a Kubernetes minor the locked kubernetes-validate lacks; missing is an error."""
    major, minor = _minor(version)
    path = root / f"v{major}.{minor}.0-local-strict"
    if not (path / "_definitions.json").is_file():
        raise ChartError(f"Kubernetes {major}.{minor} schemas missing: {path} "
                         "(run `bash scripts/setup.sh --tests`)")
    return path


def _legacy_errors(obj: dict[str, Any], version: str) -> list[str]:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    schema_dir = legacy_schema_dir(version)
    group_version = str(obj["apiVersion"])
    group, _, api = group_version.rpartition("/")
    prefix = f"{group.split('.')[0]}-" if group else ""
    path = schema_dir / f"{str(obj['kind']).lower()}-{prefix}{api}.json"
    if not path.is_file():
        return [f"{_name(obj)}: no Kubernetes {version} schema for {group_version} {obj['kind']}"]
    definitions = Resource.from_contents(_load_schema(str(schema_dir / "_definitions.json")),
                                         default_specification=DRAFT7)
    registry: Registry[Any] = Registry().with_resource("_definitions.json", definitions)
    validator = jsonschema.Draft7Validator(_load_schema(str(path)), registry=registry)
    return [f"{_name(obj)}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)]


def core_schema_errors(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Errors of one built-in object against the strict Kubernetes schema (unknown fields fail)."""
    import kubernetes_validate as kv
    from kubernetes_validate.utils import all_versions

    if _minor(version) < min(_minor(v) for v in all_versions()):
        return _legacy_errors(obj, version)
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as e:
        return [f"{_name(obj)}: {'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    except kv.SchemaNotFoundError as e:
        return [f"{_name(obj)}: no Kubernetes {version} schema for {obj['apiVersion']} {obj['kind']}: {e}"]
    return []


def schema_errors(objects: list[dict[str, Any]], root: Path, version: str = KUBERNETES_VERSION) -> list[str]:
    """Every schema error of every object (core kinds for Kubernetes ``version``, custom resources)."""
    schema_dir = crd_schema_dir(root)
    errors: list[str] = []
    for obj in objects:
        errors += (crd_schema_errors(obj, schema_dir) if is_custom_resource(obj)
                   else core_schema_errors(obj, version))
    return errors


_Obj = dict[str, Any]


def pod_templates(objects: list[_Obj]) -> Iterator[tuple[_Obj, _Obj, _Obj]]:
    """``(owner, pod labels, pod spec)`` for every workload that runs pods."""
    for obj in objects:
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "Rollout"):
            tpl = spec.get("template") or {}
        elif kind == "CronJob":
            tpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        elif kind == "Pod":
            tpl = obj
        else:
            continue
        yield obj, (tpl.get("metadata") or {}).get("labels") or {}, tpl.get("spec") or {}


def selector_matches(match_labels: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    """A ``matchLabels`` selector against a label set (empty selector matches everything)."""
    return all(labels.get(k) == v for k, v in (match_labels or {}).items())
