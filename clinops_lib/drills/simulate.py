"""A record-level drill simulator: per-request records as a real drill records them.

Why a simulator next to the real drills: the judge's claims are about probabilities (false
aborts at most ``alpha``; detection within seconds in 95 % of runs), which need thousands of
independent drills — days on the real target, seconds here. The simulator produces the *same
per-request columns* the load generator records (send time, version, latency, failed), and
every judge (:mod:`clinops_lib.drills.anytime` and the anchors' rules in
:mod:`clinops_lib.drills.baselines`) reads only those columns, so the comparison is on the
same records. Every run draws from its own seed (``numpy.random.SeedSequence`` spawned per
run): no two runs share error positions.

Traffic: open-loop ``rate`` requests/s; stable-only warm-up, then weight steps. Each request
goes to the canary with probability ``w`` (an independent coin, as a random-balancing router
does). Latency: log-normal around ``median_s`` (sigma ``sigma``), optionally a noisy baseline
that slows *both* versions alike over time (load bursts of a shared machine), a canary factor
(``+25 %`` on p50 = 1.25) and a tail fault (``+400 ms`` on a fraction of canary requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Records", "Scenario", "simulate"]


@dataclass(frozen=True)
class Records:
    """Columns of per-request records, sorted by send time (seconds from the drill start)."""

    sent: NDArray[np.float64]
    is_canary: NDArray[np.bool_]
    failed: NDArray[np.bool_]
    latency_s: NDArray[np.float64]
    weight: NDArray[np.float64]  # canary routing share in force when the request was sent
    first_canary_s: float  # when the first weight step started

    def __len__(self) -> int:
        return int(self.sent.size)

    @classmethod
    def from_request_records(
        cls, records: Any, canary: str, stable: str, weight_at: Any, first_canary_s: float
    ) -> Records:
        """From the load generator's records (attributed ones only); ``weight_at(t)`` -> share."""
        rows = [r for r in records if r.version in (canary, stable) and r.status > 0]
        rows.sort(key=lambda r: r.sent)
        sent = np.array([r.sent for r in rows], dtype=float)
        return cls(
            sent,
            np.array([r.version == canary for r in rows], dtype=bool),
            np.array([r.failed for r in rows], dtype=bool),
            np.array([r.latency_s for r in rows], dtype=float),
            np.array([weight_at(t) for t in sent], dtype=float),
            first_canary_s,
        )


@dataclass(frozen=True)
class Scenario:
    """One simulated drill; ``steps`` are (canary share, seconds) after ``warmup_s`` of stable only."""

    rate: float = 200.0
    warmup_s: float = 3.0
    steps: tuple[tuple[float, float], ...] = ((0.1, 300.0),)
    stable_error: float = 0.0
    canary_error: float | None = None  # None: same as stable
    median_s: float = 0.02
    sigma: float = 0.5
    canary_latency_factor: float = 1.0
    tail_fraction: float = 0.0
    tail_add_s: float = 0.4
    noisy: bool = False
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def but(self, **changes: Any) -> Scenario:
        return replace(self, **changes)

    @property
    def duration_s(self) -> float:
        return self.warmup_s + sum(s for _, s in self.steps)


def _noise(rng: np.random.Generator, seconds: int) -> NDArray[np.float64]:
    """Per-second latency multiplier shared by both versions: AR(1) drift plus load bursts."""
    eps = rng.normal(0, 0.15, seconds)
    level = np.empty(seconds)
    x = 0.0
    for i in range(seconds):
        x = 0.9 * x + eps[i]
        level[i] = x
    burst = rng.random(seconds) < 0.03
    burst_mult = np.ones(seconds)
    for start in np.flatnonzero(burst):
        burst_mult[start : start + 3] = np.maximum(burst_mult[start : start + 3], rng.uniform(1.5, 4.0))
    return np.asarray(np.exp(level) * burst_mult, dtype=float)


def simulate(sc: Scenario, seed: int | np.random.SeedSequence) -> Records:
    """One drill's records."""
    rng = np.random.default_rng(seed)
    n = int(round(sc.duration_s * sc.rate))
    sent = np.arange(n) / sc.rate + rng.uniform(0, 1 / sc.rate, n)  # open loop with send jitter
    weight = np.zeros(n)
    t = sc.warmup_s
    for w, secs in sc.steps:
        weight[(sent >= t) & (sent < t + secs)] = w
        t += secs
    is_canary = rng.random(n) < weight
    p_err = np.where(
        is_canary, sc.stable_error if sc.canary_error is None else sc.canary_error, sc.stable_error
    )
    failed = rng.random(n) < p_err
    lat = rng.lognormal(np.log(sc.median_s), sc.sigma, n)
    if sc.noisy:
        mult = _noise(rng, int(np.ceil(sc.duration_s)) + 1)
        lat = lat * mult[sent.astype(int)]
        spikes = rng.random(n) < 0.005
        lat = lat + spikes * rng.uniform(0.1, 0.3, n)
    lat = np.where(is_canary, lat * sc.canary_latency_factor, lat)
    if sc.tail_fraction:
        tail = is_canary & (rng.random(n) < sc.tail_fraction)
        lat = lat + tail * sc.tail_add_s
    return Records(sent, is_canary, failed, lat, weight, sc.warmup_s)
