"""The Helm charts as the single source of truth for rollout behaviour.

Two halves:

* **Values API** (pure PyYAML, no Helm needed): ``service_versions``, ``canary_steps``,
  ``analysis_thresholds``, ``analysis_queries``, ``blue_green``. It reads
  ``charts/clinical-mlops`` values files and merges them the way Helm does (subchart
  defaults < umbrella ``values.yaml`` < ``values-<env>.yaml``; maps merge, lists replace,
  ``null`` deletes; ``global`` flows into every subchart). The local target and the drill
  judge call it, so a drill judges a canary by exactly the numbers the cluster's
  AnalysisTemplates carry; ``tests/test_chart_consistency.py`` proves the two agree.
* **Helm SDK** (``helm_python``, Helm v4 behind ctypes; no helm binary): ``render`` and
  ``lint`` return what Helm itself produces, and ``chart_from_cli`` backs
  ``clinops chart render|lint``.

Third-party charts (bitnami PostgreSQL/Redis, Strimzi, MinIO, kube-prometheus-stack, Airflow,
Spark operator, MLflow, OpenSearch, Fluent Bit) are declared, pinned dependencies that are
never vendored. Helm's renderer skips a declared dependency that is absent from ``charts/``;
``render`` makes that explicit by switching every absent one off (its ``condition``) and
``missing_dependencies`` lists them, so the offline render covers exactly the project's own
templates.

A values *profile* (``values-<profile>.yaml`` layered over the environment's file, e.g.
``local-cluster`` for the single-node cluster built from Debian packages) and ``overrides``
(``--set``) join the environment in every reader here; the Helm half (:mod:`.render`) adds the
Kubernetes version and the ``clinops-common`` library chart.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..config import PortMap, project_root
from ..exceptions import ChartError, ConfigError

__all__ = [
    "CHART_NAME",
    "ENVIRONMENTS",
    "GITOPS_CHART_NAME",
    "LEVELS",
    "LIBRARY_CHART_NAME",
    "SERVICES",
    "analysis_queries",
    "analysis_thresholds",
    "available_profiles",
    "blue_green",
    "canary_steps",
    "chart_dir",
    "declared_dependencies",
    "disabled_components",
    "duration_seconds",
    "env_values",
    "external_level0",
    "missing_dependencies",
    "prometheus_rules_file",
    "scaled_steps",
    "service_versions",
    "subchart_values",
    "with_dependency_archives",
]

CHART_NAME = "clinical-mlops"
GITOPS_CHART_NAME = "gitops"
LIBRARY_CHART_NAME = "clinops-common"
ENVIRONMENTS = ("dev", "staging", "prod")
#: Level subcharts in level order (0..6); the app-of-apps sync waves follow this order.
LEVELS = (
    "infrastructure",
    "data-ingestion",
    "data-processing",
    "feature-engineering",
    "ml-pipeline",
    "orchestration",
    "observability",
)
#: Online services: name -> (level subchart, values key, rollout strategy).
SERVICES: dict[str, tuple[str, str, str]] = {
    "clinical-gateway": ("data-ingestion", "gateway", "canary"),
    "model-serving": ("ml-pipeline", "serving", "blueGreen"),
}
RELEASE_NAME = "clinops"

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# -- locating things ---------------------------------------------------------------------
def chart_dir(root: Path | None = None, name: str = CHART_NAME) -> Path:
    """``charts/<name>`` under the project root (``CLINOPS_PROJECT_ROOT`` aware)."""
    return (root or project_root()) / "charts" / name


def prometheus_rules_file(root: Path | None = None) -> Path:
    """The Prometheus rule file shared by the chart's PrometheusRule and the local Prometheus."""
    path = chart_dir(root) / "charts" / "observability" / "rules" / "platform-rules.yaml"
    if not path.is_file():
        raise ChartError(f"Prometheus rule file missing: {path}")
    return path


def _check_env(env: str) -> None:
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {env!r}; known: {', '.join(ENVIRONMENTS)}")


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ChartError(f"values file missing: {path}") from e
    except yaml.YAMLError as e:
        raise ChartError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChartError(f"{path} must hold a mapping at the top level, not {type(data).__name__}")
    return data


# -- Helm-style values merging -----------------------------------------------------------
def _merge(base: Mapping[str, Any], override: Mapping[str, Any], keep_nulls: bool = False) -> dict[str, Any]:
    """Helm's coalescing: maps merge recursively, anything else (lists too) is replaced,
    and an explicit ``null`` removes the key.

    Between user values files (``keep_nulls=True``) a ``null`` is kept so it still deletes the
    chart default underneath, as Helm does; against chart defaults it removes the key.
    """
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            if keep_nulls:
                out[key] = None
            else:
                out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, keep_nulls)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _drop_nulls(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _drop_nulls(v) if isinstance(v, Mapping) else v for k, v in values.items() if v is not None}


def available_profiles(root: Path | None = None) -> list[str]:
    """Values profiles of the umbrella chart: every ``values-<name>.yaml`` that is not an environment."""
    names = (p.name[len("values-"):-len(".yaml")] for p in chart_dir(root).glob("values-*.yaml"))
    return sorted(n for n in names if n not in ENVIRONMENTS)


def _check_profiles(chosen: tuple[str, ...] | list[str], root: Path | None) -> None:
    known = available_profiles(root)
    for name in chosen:
        if name not in known:
            raise ConfigError(f"unknown values profile {name!r}; known: {', '.join(known) or 'none'}")


def env_values(env: str, root: Path | None = None, profiles: tuple[str, ...] = (),
               overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Umbrella values for ``env``: ``values.yaml`` overridden by ``values-<env>.yaml``, then by
    each profile's ``values-<profile>.yaml`` in the order given (``helm -f`` order), then by
    ``overrides`` (``--set``: e.g. ``external_level0``'s addresses).

    This is what ``render(env)`` hands to Helm as user values (Helm adds subchart defaults).
    """
    _check_env(env)
    _check_profiles(profiles, root)
    cdir = chart_dir(root)
    values = _merge(_load_yaml(cdir / "values.yaml"), _load_yaml(cdir / f"values-{env}.yaml"),
                    keep_nulls=True)
    for name in profiles:
        values = _merge(values, _load_yaml(cdir / f"values-{name}.yaml"), keep_nulls=True)
    return _merge(values, overrides or {}, keep_nulls=True)


def external_level0(host: str, ports: PortMap) -> dict[str, Any]:
    """Overrides pointing the external Level 0 services (and the analysis Prometheus) at the local
    target's ports on ``host`` (an address pods can route to, e.g. the cni0 gateway 10.88.0.1)."""
    return {"global": {
        "externalPostgresql": {"host": host, "port": ports.postgres},
        "externalRedis": {"host": host, "port": ports.redis},
        "externalLocalstack": {"host": host, "port": ports.localstack},
        "prometheus": {"address": f"http://{host}:{ports.prometheus}"},
    }}


def subchart_values(level: str, env: str, root: Path | None = None, profiles: tuple[str, ...] = (),
                    overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``.Values`` a level subchart sees in ``env`` (and profiles), computed as Helm computes it."""
    if level not in LEVELS:
        raise ChartError(f"unknown level subchart {level!r}; known: {', '.join(LEVELS)}")
    top = env_values(env, root, profiles, overrides)
    defaults = _load_yaml(chart_dir(root) / "charts" / level / "values.yaml")
    merged = _merge(defaults, top.get(level) or {})
    merged["global"] = _merge(defaults.get("global") or {}, top.get("global") or {})
    return _drop_nulls(merged)


def _service(service: str, env: str, root: Path | None,
             profiles: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any], str]:
    if service not in SERVICES:
        raise ChartError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
    level, key, strategy = SERVICES[service]
    values = subchart_values(level, env, root, profiles)
    svc = values.get(key)
    if not isinstance(svc, dict):
        raise ChartError(f"{level} values have no {key!r} block for service {service!r} in {env}")
    return svc, values, strategy


# -- the values API (what the local target and the drills read) -----------------------------
def service_versions(env: str, root: Path | None = None, *, profiles: tuple[str, ...] = ()) -> dict[str, str]:
    """Image tag (= the ``version`` metric label) of each online service in ``env``."""
    out: dict[str, str] = {}
    for service in SERVICES:
        svc, _, _ = _service(service, env, root, profiles)
        tag = str((svc.get("image") or {}).get("tag") or "")
        if not tag or tag == "latest":
            raise ChartError(f"{service} in {env}: image tag must be pinned (got {tag!r})")
        out[service] = tag
    return out


def canary_steps(service: str, env: str, root: Path | None = None, *,
                 profiles: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The Rollout's ``strategy.canary.steps`` for ``service`` in ``env`` (Argo Rollouts form)."""
    svc, _, strategy = _service(service, env, root, profiles)
    if strategy != "canary":
        raise ChartError(f"{service} is rolled out {strategy}, it has no canary steps")
    steps = (svc.get("canary") or {}).get("steps")
    if not isinstance(steps, list) or not steps:
        raise ChartError(f"{service} in {env}: canary.steps must be a non-empty list")
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or len(step) != 1:
            raise ChartError(f"{service} in {env}: canary step {i} must be a one-key mapping: {step!r}")
        if "pause" in step and "duration" in (step["pause"] or {}):
            duration_seconds(step["pause"]["duration"])  # validates the unit
    return copy.deepcopy(steps)


def duration_seconds(value: str | int | float) -> float:
    """An Argo Rollouts/Go duration (``"30s"``, ``"15m"``, ``"1h30m"``, or bare seconds) in seconds."""
    if isinstance(value, bool):
        raise ChartError(f"duration {value!r} is not a duration")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    if not _DURATION.match(text):
        raise ChartError(f"duration {value!r} is not of the form 30s, 15m, 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def scaled_steps(steps: list[dict[str, Any]], pause_scale: float) -> list[dict[str, Any]]:
    """Canary steps with every timed pause multiplied by ``pause_scale`` (drills compress time).

    Durations come back as seconds (float) under ``pause.seconds`` next to the original string.
    """
    if not (0 < pause_scale <= 1):
        raise ChartError(f"pause_scale {pause_scale!r} must be in (0, 1]")
    out = copy.deepcopy(steps)
    for step in out:
        pause = step.get("pause")
        if isinstance(pause, dict) and "duration" in pause:
            pause["seconds"] = duration_seconds(pause["duration"]) * pause_scale
    return out


def analysis_thresholds(env: str, root: Path | None = None) -> dict[str, Any]:
    """Thresholds the AnalysisTemplates apply (and the drill judge applies) in ``env``.

    Keys: ``success_rate_min`` (ratio), ``latency_p95_max_seconds``, ``interval`` (seconds),
    ``interval_text`` (as in the template), ``count``, ``failure_limit``, ``inconclusive_limit``.
    """
    a = _drop_nulls(env_values(env, root)).get("global", {}).get("analysis") or {}
    try:
        out = {
            "success_rate_min": float(a["successRateMin"]),
            "latency_p95_max_seconds": float(a["latencyP95MaxSeconds"]),
            "interval": duration_seconds(a["interval"]),
            "interval_text": str(a["interval"]),
            "count": int(a["count"]),
            "failure_limit": int(a["failureLimit"]),
            "inconclusive_limit": int(a["inconclusiveLimit"]),
        }
    except KeyError as e:
        raise ChartError(f"global.analysis.{e.args[0]} missing in {env} values") from e
    except (TypeError, ValueError) as e:
        raise ChartError(f"global.analysis in {env} values has a non-numeric entry: {e}") from e
    rate = float(a["successRateMin"])
    if not 0 < rate <= 1:
        raise ChartError(f"global.analysis.successRateMin {rate} must be in (0, 1]")
    return out


def _query_templates(env: str, root: Path | None) -> dict[str, str]:
    q = ((env_values(env, root).get("global") or {}).get("analysis") or {}).get("queries") or {}
    try:
        return {"success_rate": str(q["successRate"]).strip(), "latency_p95": str(q["latencyP95"]).strip()}
    except KeyError as e:
        raise ChartError(f"global.analysis.queries.{e.args[0]} missing in {env} values") from e


def analysis_queries(env: str, service: str, version: str | None = None,
                     root: Path | None = None) -> dict[str, str]:
    """The AnalysisTemplates' PromQL with ``{{args.service}}``/``{{args.version}}`` resolved.

    ``version=None`` drops the version matcher (the whole service, every version).
    """
    if service not in SERVICES:
        raise ChartError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
    out = {}
    for name, query in _query_templates(env, root).items():
        if version is None:
            query = re.sub(r',\s*version="\{\{\s*args\.version\s*\}\}"', "", query)
        else:
            query = re.sub(r"\{\{\s*args\.version\s*\}\}", version, query)
        out[name] = re.sub(r"\{\{\s*args\.service\s*\}\}", service, query)
    return out


def _strict_bool(value: Any, what: str) -> bool:
    """A YAML boolean, never a truthy string: "false" in a values file must not promote."""
    if not isinstance(value, bool):
        raise ChartError(f"{what} must be true or false, not {value!r}")
    return value


def _analysis_ref(service: str, version: str) -> dict[str, Any]:
    """How a Rollout references the two AnalysisTemplates (same shape the templates render)."""
    return {
        "templates": [{"templateName": "success-rate"}, {"templateName": "latency-p95"}],
        "args": [{"name": "service", "value": service}, {"name": "version", "value": version}],
    }


def blue_green(service: str, env: str, root: Path | None = None, *,
               profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """Blue-green settings of ``service`` in ``env`` (what its Rollout carries)."""
    svc, _, strategy = _service(service, env, root, profiles)
    if strategy != "blueGreen":
        raise ChartError(f"{service} is rolled out {strategy}, it has no blue-green settings")
    bg = svc.get("blueGreen") or {}
    version = service_versions(env, root, profiles=profiles)[service]
    try:
        return {
            "active_service": service,
            "preview_service": f"{service}-preview",
            "auto_promotion_enabled": _strict_bool(bg["autoPromotionEnabled"],
                                                   f"{service} in {env}: blueGreen.autoPromotionEnabled"),
            "scale_down_delay_seconds": int(bg["scaleDownDelaySeconds"]),
            "pre_promotion_analysis": _analysis_ref(service, version),
            "post_promotion_analysis": _analysis_ref(service, version),
        }
    except KeyError as e:
        raise ChartError(f"{service} in {env}: blueGreen.{e.args[0]} missing") from e


def disabled_components(env: str, root: Path | None = None, *,
                        profiles: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Per level, the components its values switch off (``<component>.enabled: false``: a bundled
    chart or one of the level's own workloads), e.g. what the local-cluster profile leaves out
    because that cluster has no image for it. A status report names these "not on this cluster"."""
    out: dict[str, list[str]] = {}
    for level in LEVELS:
        values = subchart_values(level, env, root, profiles)
        off = sorted(k for k, v in values.items()
                     if k != "global" and isinstance(v, Mapping) and v.get("enabled") is False)
        if off:
            out[level] = off
    return out


# -- dependencies ----------------------------------------------------------------------------
def _is_local(dep: Mapping[str, Any]) -> bool:
    return str(dep.get("repository") or "").startswith("file://")


def declared_dependencies(root: Path | None = None) -> list[dict[str, Any]]:
    """Third-party dependencies declared by the level subcharts, each with its ``level``
    (the ``file://`` library chart is the project's own, built by ``build_dependencies``)."""
    out = []
    for level in LEVELS:
        meta = _load_yaml(chart_dir(root) / "charts" / level / "Chart.yaml")
        for dep in meta.get("dependencies") or []:
            if not _is_local(dep):
                out.append({"level": level, **dep})
    return out


def missing_dependencies(root: Path | None = None) -> list[dict[str, Any]]:
    """Declared third-party dependencies not present under ``charts/<level>/charts/`` (not vendored)."""
    out = []
    for dep in declared_dependencies(root):
        sub = chart_dir(root) / "charts" / dep["level"] / "charts"
        present = (sub / dep["name"]).is_dir() or any(sub.glob(f"{dep['name']}-*.tgz"))
        if not present:
            out.append(dep)
    return out


def with_dependency_archives(archive_dir: Path, dest: Path, root: Path | None = None) -> Path:
    """A copy of the charts under ``dest`` with every declared third-party dependency found in
    ``archive_dir`` (``<name>-<version>.tgz``, e.g. ``../shared/charts``) laid out where
    ``helm dependency build`` puts it; returns the copy's project root for ``render(env, root)``.
    The repository itself is never written to; absent archives stay absent (switched off)."""
    src = (root or project_root()) / "charts"
    shutil.copytree(src, dest / "charts", ignore=shutil.ignore_patterns("*.tgz", ".build-*"))
    for dep in declared_dependencies(dest):
        archive = archive_dir / f"{dep['name']}-{dep['version']}.tgz"
        if archive.is_file():
            target = chart_dir(dest) / "charts" / dep["level"] / "charts"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(archive, target / archive.name)
    return dest
