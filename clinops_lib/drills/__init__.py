"""Canary and blue-green drills: move real traffic through a :class:`~clinops_lib.target.Target`
while open-loop load flows, judge every analysis interval, and promote or abort.

The engine acts *only* through the ``Target`` interface (deploy, set_canary_weight,
canary_weight, promote, abort, retire, tracks, prometheus_query), so the same drill runs on
the local target, on kind and on any cluster.

Canary (Argo Rollouts form, from ``charts.canary_steps``; default ``10 -> pause -> 50 ->
pause -> 100``): ``setWeight`` moves traffic, ``pause: {duration}`` holds it while the
background analysis runs every interval, ``analysis`` runs ``count`` intervals and needs
them to pass. After the last step one more interval is judged at the final weight: the
drill never promotes on data it has not seen.

Time compression. ``pause_scale`` multiplies every pause *and* the analysis interval, so a
compressed drill keeps the chart's proportions (a pause still spans the same number of
intervals); the scaled interval is floored at ``thresholds.min_interval_s`` because
Prometheus needs a few scrapes per interval. Validation compares the *scaled* pause with the
*scaled* (floored) interval: a pause shorter than one interval would move traffic again
before any verdict, so it is rejected.

Decisions (also written into every result):

* the anytime-valid error test is checked every ``poll_s`` (0.5 s) — a bad canary is
  aborted mid-interval, as soon as the evidence reaches ``1/alpha``;
* latency is also looked at every second between interval ends (Mann-Whitney on the requests
  since the last weight change, look k at level ``latency_alpha / 2**(k+1)`` so all looks
  together stay within ``latency_alpha``, plus the minimum effect size);
* an interval verdict is Fail, Inconclusive (too few canary requests, metrics without data)
  or Pass; more Fail intervals than ``failure_limit`` aborts; more Inconclusive than
  ``inconclusive_limit`` pauses or aborts (``on_inconclusive``), never promotes;
* faults of the platform abort at once and say why: the canary's process gone, Prometheus
  unreachable (a query error), the traffic layer not answering or not holding the weight.

Abort: all traffic back to stable (``target.abort``) at once; the canary is retired after
``abort_delay_s``. Blue-green: green runs as preview (canary track, weight 0), gets its own
load on ``preview_url`` for the pre-promotion analysis, promotion switches 100 % to it,
post-promotion analysis follows, and during ``scaleDownDelaySeconds`` a rollback drill
switches back to blue and forward again, proving with the per-request records which
version served before and after each switch.
"""

from __future__ import annotations

from .bluegreen import promote_blue_green, run_blue_green
from .canary import run_canary
from .config import (
    BlueGreenConfig,
    CanaryConfig,
    auto_promotion_enabled,
    normalize_steps,
    threshold_overrides,
    validate_blue_green,
    validate_canary,
)
from .result import DrillEvent, DrillResult, Outcome

__all__ = [
    "BlueGreenConfig",
    "CanaryConfig",
    "DrillEvent",
    "DrillResult",
    "Outcome",
    "auto_promotion_enabled",
    "normalize_steps",
    "promote_blue_green",
    "run_blue_green",
    "run_canary",
    "threshold_overrides",
    "validate_blue_green",
    "validate_canary",
]
