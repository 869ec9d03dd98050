"""The anchors' decision rules as judges over the same per-request records.

Argo Rollouts, Flagger and Kayenta publish no detection-time or false-alarm figures; to compare
clinops with them honestly their *rules* run here on exactly the records the clinops judge
sees (:class:`~clinops_lib.drills.simulate.Records`). Each returns the moment it would abort
(seconds from the drill start) or ``None``. What each rule reads is what its Prometheus query
would return: a window of canary requests ending at the measurement (exact quantiles where
Prometheus interpolates histogram buckets — a small advantage to the anchors).

* **Argo Rollouts** — the chart's AnalysisTemplate (``charts/clinical-mlops`` values): success
  rate ``>= successRateMin`` and p95 ``<= latencyP95MaxSeconds`` over ``rate(...[1m])``, one
  measurement every ``interval``; a metric fails when its failed measurements exceed
  ``failureLimit``.
* **Flagger** — its defaults: ``interval: 1m``, ``threshold: 5``, builtin
  ``request-success-rate`` (min 99 %) and ``request-duration`` (P99 max 500 ms) over 1m; roll
  back when failed checks reach ``threshold``.
* **Kayenta** — the NetflixACAJudge's Mann-Whitney classifier per analysis interval on the
  metrics' time series (one point per ``step``): a metric is *High* when the lower end of the
  Mann-Whitney confidence interval (95 %) of experiment minus control exceeds ``tolerance``
  (0.25) times the Hodges-Lehmann estimate and the mean ratio is ``>= 1``; two metrics (error
  ratio, p95 latency), score = share passing, below the marginal 75 fails the canary. Data from
  the start of the analysis to the end of each interval (Kayenta's default, no lookback).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .anytime import DrillJudge, JudgeSettings, LatencyThresholds
from .simulate import Records

__all__ = ["ArgoRule", "ClinopsRule", "FlaggerRule", "KayentaRule"]


def _window(rec: Records, start: float, end: float) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Failed flags and latencies of the canary requests sent in [start, end) (records are sorted)."""
    a, b = np.searchsorted(rec.sent, [start, end])
    m = rec.is_canary[a:b]
    return rec.failed[a:b][m], rec.latency_s[a:b][m]


@dataclass(frozen=True)
class ArgoRule:
    """Argo Rollouts background analysis with the chart's dev values."""

    interval_s: float = 10.0
    window_s: float = 60.0
    success_rate_min: float = 0.95
    p95_max_s: float = 0.5
    failure_limit: int = 1
    name: str = "Argo Rollouts"

    def decide(self, rec: Records) -> float | None:
        failures = {"success-rate": 0, "latency-p95": 0}
        t = rec.first_canary_s + self.interval_s
        end = float(rec.sent[-1]) + 0.5  # a measurement right at the end of the traffic still reads it
        while t <= end + 1e-9:
            fails, lats = _window(rec, max(rec.first_canary_s, t - self.window_s), t)
            if fails.size:  # no data = Inconclusive, never a failure
                if 1 - fails.mean() < self.success_rate_min:
                    failures["success-rate"] += 1
                if np.quantile(lats, 0.95) > self.p95_max_s:
                    failures["latency-p95"] += 1
                if max(failures.values()) > self.failure_limit:
                    return t
            t += self.interval_s
        return None


@dataclass(frozen=True)
class FlaggerRule:
    """Flagger's analysis loop with its builtin checks and defaults."""

    interval_s: float = 60.0
    threshold: int = 5
    success_rate_min: float = 0.99
    p99_max_s: float = 0.5
    name: str = "Flagger"

    def decide(self, rec: Records) -> float | None:
        failed_checks = 0
        t = rec.first_canary_s + self.interval_s
        end = float(rec.sent[-1]) + 0.5  # a measurement right at the end of the traffic still reads it
        while t <= end + 1e-9:
            fails, lats = _window(rec, t - self.interval_s, t)
            if fails.size:
                ok = 1 - fails.mean() >= self.success_rate_min and np.quantile(lats, 0.99) <= self.p99_max_s
                if not ok:
                    failed_checks += 1
                    if failed_checks >= self.threshold:
                        return t
            t += self.interval_s
        return None


def _mann_whitney_high(
    exp: NDArray[np.float64], ctl: NDArray[np.float64], tolerance: float, conf: float
) -> bool:
    """Kayenta's MannWhitneyClassifier 'High' decision (normal-approximation interval)."""
    from statistics import NormalDist

    if exp.size < 2 or ctl.size < 2:
        return False
    if np.array_equal(np.sort(exp), np.sort(ctl)) or np.unique(np.concatenate([exp, ctl])).size == 1:
        return False
    diffs = np.sort(np.subtract.outer(exp, ctl).ravel())
    m, n = exp.size, ctl.size
    estimate = float(np.median(diffs))
    z = NormalDist().inv_cdf(0.5 + conf / 2)
    k = int(math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12)))
    k = max(0, min(k, diffs.size - 1))
    lower = float(diffs[k])
    mean_c = float(ctl.mean())
    ratio = 1.0 if mean_c == 0 else float(exp.mean()) / mean_c
    return lower > tolerance * abs(estimate) and ratio >= 1.0


@dataclass(frozen=True)
class KayentaRule:
    """Kayenta per-interval judgement (NetflixACAJudge, Mann-Whitney classifier)."""

    interval_s: float = 60.0
    step_s: float = 1.0
    tolerance: float = 0.25
    confidence: float = 0.95
    marginal: float = 75.0
    name: str = "Kayenta"

    def _series(self, rec: Records, canary: bool, start: float) -> tuple[NDArray[np.float64], ...]:
        """(step end time, error ratio, p95) per step with data; a step without data is NaN in
        Prometheus and removed (NaNStrategy.Remove)."""
        arm = (rec.is_canary == canary) & (rec.sent >= start)
        idx = ((rec.sent[arm] - start) // self.step_s).astype(int)
        fails, lats = rec.failed[arm], rec.latency_s[arm]
        order = np.lexsort((lats, idx))
        idx, fails, lats = idx[order], fails[order], lats[order]
        steps, first, counts = np.unique(idx, return_index=True, return_counts=True)
        err = np.add.reduceat(fails.astype(float), first) / counts
        p95 = lats[first + np.ceil(0.95 * counts).astype(int) - 1]  # nearest-rank p95 of each step
        return start + (steps + 1) * self.step_s, err, p95

    def decide(self, rec: Records) -> float | None:
        start = rec.first_canary_s
        c_end, c_err, c_p95 = self._series(rec, True, start)
        s_end, s_err, s_p95 = self._series(rec, False, start)
        t = start + self.interval_s
        end = float(rec.sent[-1]) + 0.5
        while t <= end + 1e-9:
            c, s = c_end <= t + 1e-9, s_end <= t + 1e-9
            high = [
                _mann_whitney_high(c_err[c], s_err[s], self.tolerance, self.confidence),
                _mann_whitney_high(c_p95[c], s_p95[s], self.tolerance, self.confidence),
            ]
            score = 100.0 * (len(high) - sum(high)) / len(high)
            if score < self.marginal:
                return t
            t += self.interval_s
        return None


@dataclass(frozen=True)
class ClinopsRule:
    """The clinops anytime-valid judge (thresholds frozen from the stable-only warm-up)."""

    settings: JudgeSettings = JudgeSettings()
    name: str = "clinops"

    def decide(self, rec: Records) -> float | None:
        judge = self.judge(rec)
        return judge.rejected_at

    def judge(self, rec: Records) -> DrillJudge:
        judge = DrillJudge(self.settings)
        warm = (rec.sent < rec.first_canary_s) & ~rec.is_canary & ~rec.failed
        judge.freeze(LatencyThresholds.from_warmup(rec.latency_s[warm], self.settings.floor_s))
        live = rec.sent >= rec.first_canary_s
        judge.observe(
            rec.sent[live], rec.is_canary[live], rec.failed[live], rec.latency_s[live], rec.weight[live]
        )
        return judge
