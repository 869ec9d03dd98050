"""The Helm charts as the single source of truth for rollout behaviour.

Two halves:

* **Values API** (:mod:`.values`, pure PyYAML, no Helm needed): ``service_versions``,
  ``canary_steps``, ``analysis_thresholds``, ``analysis_queries``, ``blue_green``. It reads
  ``charts/clinical-mlops`` values files and merges them the way Helm does. The local target
  and the drill judge call it, so a drill judges a canary by exactly the numbers the cluster's
  AnalysisTemplates carry; ``tests/test_chart_consistency.py`` proves the two agree.
* **Helm SDK** (:mod:`.render`): ``render`` and ``lint`` return what Helm itself produces.
"""

from __future__ import annotations

from . import render as _render
from . import values as _values
from .render import *  # noqa: F403 - this package's API is its modules' public names
from .values import *  # noqa: F403

__all__ = [*_values.__all__, *_render.__all__]
