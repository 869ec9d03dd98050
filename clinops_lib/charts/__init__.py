"""The Helm charts as the single source of truth for rollout behaviour.

Two halves:

* **Values API** (:mod:`.values`, pure PyYAML, no Helm needed): ``service_versions``,
  ``canary_steps``, ``analysis_thresholds``, ``analysis_queries``, ``blue_green``. It reads
  ``charts/clinical-mlops`` values files (an environment, optional profiles such as
  ``local-cluster``, optional overrides) and merges them the way Helm does. The local target
  and the drill judge call it, so a drill judges a canary by exactly the numbers the cluster's
  AnalysisTemplates carry; ``tests/test_chart_consistency.py`` proves the two agree.
* **Helm SDK** (:mod:`.render`): ``render`` and ``lint`` return what Helm itself produces, for a
  Kubernetes version; ``build_dependencies``/``level_chart`` pack the ``clinops-common`` library
  chart into the charts that depend on it.
"""

from __future__ import annotations

from .render import (
    build_dependencies,
    chart_from_cli,
    level_chart,
    lint,
    render,
    render_gitops,
    render_raw,
    to_yaml,
)
from .values import (
    CHART_NAME,
    ENVIRONMENTS,
    GITOPS_CHART_NAME,
    LEVELS,
    LIBRARY_CHART_NAME,
    SERVICES,
    analysis_queries,
    analysis_thresholds,
    available_profiles,
    blue_green,
    canary_steps,
    chart_dir,
    declared_dependencies,
    disabled_components,
    duration_seconds,
    env_values,
    external_level0,
    missing_dependencies,
    prometheus_rules_file,
    scaled_steps,
    service_versions,
    subchart_values,
    with_dependency_archives,
)

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
    "build_dependencies",
    "canary_steps",
    "chart_dir",
    "chart_from_cli",
    "declared_dependencies",
    "disabled_components",
    "duration_seconds",
    "env_values",
    "external_level0",
    "level_chart",
    "lint",
    "missing_dependencies",
    "prometheus_rules_file",
    "render",
    "render_gitops",
    "render_raw",
    "scaled_steps",
    "service_versions",
    "subchart_values",
    "to_yaml",
    "with_dependency_archives",
]
