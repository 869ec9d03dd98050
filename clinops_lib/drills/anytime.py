"""The anytime-valid judge: one false-alarm guarantee for errors and latency, checked per request.

Why this shape (issue 11). A canary judge looks at its data continuously and stops as soon as
the evidence is there; a fixed-sample test looked at again and again ("peeking") has a false
alarm rate far above its nominal level. Everything here is built from *e-processes*:
non-negative supermartingales under the null hypothesis, for which Ville's inequality gives
``P(sup_n E_n >= 1/alpha) <= alpha`` however often — and whenever — they are looked at.

**The conditional Bernoulli construction** (one idea for errors and for latency). Request ``i``
goes to the canary with a probability ``w_i`` the router fixes *before* the request (the canary
weight in force when it was sent; changes of weight are simply a different ``w_i``). Call a
request a *bad event* for some definition (it failed; its latency exceeded a threshold). If the
canary has event probability ``p_c`` and stable ``p_s`` at that moment, then given that request
``i`` was a bad event it came from the canary with probability
``w p_c / (w p_c + (1 - w) p_s)``. The null "the canary is at most ``(1 + rho)`` times as bad",
``p_c <= (1 + rho) p_s``, bounds that probability by::

    p0(w, rho) = w (1 + rho) / (w (1 + rho) + 1 - w)

whatever the common level ``p_s`` is and however it drifts in time (a slow machine slows both
versions alike): no nuisance parameter is estimated. With ``X = 1`` for a canary event, each
factor ``1 + c (X - p0) / p0`` (``0 < c < 1``) has conditional mean ``<= 1`` under the null and
is ``>= 1 - c > 0``; their running product is a test supermartingale for every ``c``, and an
average over a grid of ``c`` (adapting to the unknown effect size) is one too.

* **Errors**: the event is "failed" (HTTP 5xx, no answer), ``rho = error_rho`` (default 0).
* **Latency**: thresholds are *frozen* before the first canary request at stable's p50, p90 and
  p99 measured on stable-only warm-up traffic, plus an absolute ``floor_s`` (so microsecond
  jitter of a 3 ms service is no regression); the event is "slower than the threshold *or
  failed*" (a timeout must not make a canary look fast). ``rho = latency_rho`` (default 0.2: the
  canary may exceed each threshold up to 20 % more often than stable). The thresholds are fixed
  numbers known before the data they judge, which is all the construction needs.
* **Latency only under comparable load.** The null compares the versions *as routed*, and on a
  real machine a process's latency depends on the traffic it carries, not only on its code:
  measured on the local target (2 cores, 100 req/s, the same code on both tracks), the backend at
  10 % answered with a median 3x stable's at 90 % (5-9 ms against 2 ms), at 25 % about 2x, at 33 %
  1.3-1.5x, at 50 % the same; at 90 % the *canary* was the fast one. A latency comparison at 10 %
  measures the split, and the judge aborted clean canaries on it (``latency>p50``, 9/11 canary
  events) while it would have hidden a regression at 90 %. So latency bad events count only while
  the canary's configured share is within ``latency_shares`` (default 40-60 %: neither version
  carries more than 1.5x the other's traffic) and at least ``latency_settle_s`` (1 s) after that
  share was applied (a process that went from idle to half the load answers slower for a second or
  two; a clean canary was aborted on 18/18 canary events within a second of 50 %; what outlasts the
  second is a short burst, which the per-block cap below discounts). Both are known before
  the request is sent, so skipping the other events keeps every process a supermartingale. Errors
  are judged at every share. A plan without a step in the window gets no latency comparison from
  this judge (only the absolute p95 threshold of the Argo-style analysis), and the drill says so.

* **A latency regression must persist: evidence capped per time block.** The null above holds
  request by request; on a real platform it is also broken by an *instance*, not a version: on
  the cluster tier a clean canary was aborted on ``latency>p99`` with 20 of 21 events from the
  canary within two seconds at 50 % (canary p95 76 ms against stable's 32 ms in that interval,
  equal before and after): one of its pods answered slowly for two seconds on a loaded machine.
  Per request those events are overwhelming; as evidence about the *version* they are one
  hiccup. So each latency e-process ``E`` becomes ``F = F(b) * min(E / E(b), cap)`` within a
  time block ``b`` of ``latency_block_s`` (1 s; blocks fixed on the send-time clock, so known
  before each request): ``E / E(b)`` is a test supermartingale inside the block, its minimum
  with a constant is one, and the product over blocks is one again, so ``F`` keeps every
  guarantee; it equals ``E`` until some block reaches the cap (the ratios telescope) and is
  never larger. With the default cap 4 and ``alpha`` 0.01 an abort on latency needs the
  slowdown in at least 4 blocks (:meth:`JudgeSettings.latency_min_blocks`), so a step must hold a
  comparable share for 1 s + 4 s (the runbooks' default 50 % step holds 6 s; the drill says when a
  plan's is shorter). The cost, measured by ``benchmarks/judge.py``, is a few seconds more to
  catch a large regression (p50 +100 %: median 0.8 s -> 4.0 s; +400 ms on 5 % of requests:
  6.8 s -> 11.5 s). Errors are not capped: a pod that fails requests is a reason to abort
  however briefly it does.

**One drill-level guarantee.** All e-processes are adapted to the same filtration (requests in
the order they were *sent*), so any convex combination ``sum_j a_j E_j`` (``a_j >= 0``,
``sum a_j = 1``) is again a test supermartingale under the intersection of the nulls — which
is what an A/A drill satisfies. Ville's inequality then bounds the probability that the drill
*ever* aborts by ``alpha``, across weight changes and however often it is checked. Half the
weight goes to errors (fast detection of the common regression), half is shared by the
latency thresholds.

**Order matters.** The supermartingale property holds for requests fed in the order they
were sent. Feeding a batch with its canary events first (or sorting by completion time, which
depends on latency) peeks at the future: the running maximum is then no longer that of a
supermartingale and false aborts exceed ``alpha`` (``tests/test_judge.py`` shows both).
:meth:`DrillJudge.observe` sorts every batch by send time and tracks the maximum after every
request inside it.

**Confidence sequences for the evidence** (valid at the data-dependent moment of decision,
unlike fixed-sample intervals printed after an early stop): per-arm rates from the
beta-binomial (Jeffreys) mixture martingale (Robbins' method of mixtures; Howard, Ramdas,
McAuliffe & Sekhon 2021), and quantiles from the same boundary applied to the count of
observations below the quantile (the fixed-quantile confidence sequence of Howard & Ramdas,
Bernoulli 2022, arXiv 1906.09712). A difference of two arms combines each arm's sequence at
``alpha / 2`` (a union bound), so each reported difference covers with probability
``>= 1 - alpha`` at all times simultaneously. Failed requests count as infinitely slow in the
latency sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..catalog import percentile
from ..exceptions import ParameterError

__all__ = [
    "GRID",
    "ConditionalEProcess",
    "DrillJudge",
    "JudgeSettings",
    "LatencyThresholds",
    "bernoulli_cs",
    "error_rate_difference_cs",
    "null_share",
    "quantile_cs",
    "quantile_difference_cs",
]

#: Bet sizes ``c`` of the mixture: small ones are patient with small effects, large ones fast with large.
GRID: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)

#: Stable quantiles that become the frozen latency thresholds.
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


def null_share(w: ArrayLike, rho: float) -> NDArray[np.float64]:
    """Largest probability, under the null, that a bad event is the canary's (``w`` = routing share)."""
    w = np.asarray(w, dtype=float)
    a = w * (1.0 + rho)
    return np.asarray(a / (a + 1.0 - w), dtype=float)


@dataclass
class ConditionalEProcess:
    """Mixture e-process for "canary events <= (1 + rho) x stable events, per routed request"."""

    name: str
    rho: float = 0.0
    grid: tuple[float, ...] = GRID
    #: largest factor one time block may multiply the e-value by (None: no cap; module docstring)
    block_cap: float | None = None
    log_m: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    events: int = 0
    canary_events: int = 0
    e_value: float = 1.0
    #: time blocks in which the evidence reached the cap (each a burst the cap discounted)
    capped_blocks: int = 0
    _block: float = -math.inf  # the block of the last event
    _block_capped: bool = False  # whether that block has reached the cap so far
    _log_uncapped: float = 0.0  # log of the uncapped e-value after the last event
    _log_capped: float = 0.0  # log of the capped e-value after the last event
    _log_uncapped_at_block_start: float = 0.0
    _log_capped_at_block_start: float = 0.0

    def __post_init__(self) -> None:
        if self.rho < 0:
            raise ParameterError(f"{self.name}.rho", f"{self.rho} must be >= 0")
        if not all(0 < c < 1 for c in self.grid):
            raise ParameterError(f"{self.name}.grid", "every bet size must be in (0, 1)")
        if self.block_cap is not None and not self.block_cap > 1:
            raise ParameterError(f"{self.name}.block_cap", f"{self.block_cap} must be > 1")
        if self.log_m.size == 0:
            self.log_m = np.zeros(len(self.grid))

    def update(
        self, is_canary: NDArray[np.bool_], event: NDArray[np.bool_], w: NDArray[np.float64],
        block: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """Feed requests in send order; return the e-value after each of them.

        ``block``: each request's time block (non-decreasing, known before it was sent); needed
        when ``block_cap`` is set.
        """
        n = len(event)
        out = np.full(n, self.e_value)
        usable = event & (w > 0.0) & (w < 1.0)  # at 0 % or 100 % an event says nothing about origin
        idx = np.flatnonzero(usable)
        if idx.size == 0:
            return out
        p0 = null_share(w[idx], self.rho)
        x = is_canary[idx].astype(float)
        c = np.asarray(self.grid)
        factors = 1.0 + c[None, :] * ((x - p0) / p0)[:, None]
        logs = self.log_m[None, :] + np.cumsum(np.log(factors), axis=0)
        top = logs.max(axis=1)
        log_mix = top + np.log(np.exp(logs - top[:, None]).mean(axis=1))
        if self.block_cap is None:
            log_e = log_mix
        else:
            if block is None:
                raise ParameterError(f"{self.name}.block", "a capped e-process needs each request's block")
            log_e = self._cap_per_block(log_mix, np.asarray(block, dtype=float)[idx])
        # e-values beyond 1e300 mean the same as 1e300: cap before exp so nothing overflows
        e = np.exp(np.minimum(log_e, 690.0))
        # forward-fill: the e-value changes only at events
        pos = np.searchsorted(idx, np.arange(n), side="right") - 1
        have = pos >= 0
        out[have] = e[pos[have]]
        self.log_m = logs[-1].copy()
        self.e_value = float(e[-1])
        self._log_uncapped, self._log_capped = float(log_mix[-1]), float(log_e[-1])
        self.events += int(idx.size)
        self.canary_events += int(x.sum())
        return out

    @property
    def uncapped_e_value(self) -> float:
        """The e-value without the per-block cap (equal to ``e_value`` until a block hit the cap)."""
        return math.exp(min(self._log_uncapped, 690.0))

    def _cap_per_block(
        self, log_mix: NDArray[np.float64], blocks: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """``F = F(block start) * min(E / E(block start), cap)`` after each event, in logs.

        ``E / E(block start)`` is a test supermartingale within the block (the start is known), the
        minimum of a supermartingale and a constant is one too, and their product over blocks is
        again one: the capped process keeps the guarantee and equals ``E`` while no block reached
        the cap (the ratios telescope).
        """
        assert self.block_cap is not None
        log_cap = math.log(self.block_cap)
        n = log_mix.size
        prev_uncapped = np.concatenate(([self._log_uncapped], log_mix[:-1]))
        new_block = np.empty(n, dtype=bool)
        new_block[0] = blocks[0] != self._block
        new_block[1:] = blocks[1:] != blocks[:-1]
        carried = not new_block[0]  # the first events continue the last batch's block
        group = np.cumsum(new_block) - (0 if carried else 1)
        n_groups = int(group[-1]) + 1
        start_uncapped = np.empty(n_groups)
        start_uncapped[int(carried):] = prev_uncapped[np.flatnonzero(new_block)]
        if carried:
            start_uncapped[0] = self._log_uncapped_at_block_start
        ends = np.r_[np.flatnonzero(np.diff(group)), n - 1]
        ratio_at_end = log_mix[ends] - start_uncapped
        increments = np.minimum(ratio_at_end, log_cap)
        hit = np.zeros(n_groups, dtype=bool)
        np.logical_or.at(hit, group, log_mix - start_uncapped[group] >= log_cap)
        if carried:
            hit[0] = hit[0] and not self._block_capped  # counted once per block
        self.capped_blocks += int(hit.sum())
        self._block_capped = bool(hit[-1]) or (carried and n_groups == 1 and self._block_capped)
        start_capped = np.empty(n_groups)
        start_capped[0] = self._log_capped_at_block_start if carried else self._log_capped
        start_capped[1:] = start_capped[0] + np.cumsum(increments[:-1])
        log_f = start_capped[group] + np.minimum(log_mix - start_uncapped[group], log_cap)
        self._block = float(blocks[-1])
        self._log_uncapped_at_block_start = float(start_uncapped[-1])
        self._log_capped_at_block_start = float(start_capped[-1])
        return np.asarray(log_f, dtype=float)


@dataclass(frozen=True)
class LatencyThresholds:
    """Stable's quantiles frozen from stable-only warm-up traffic, each plus the absolute floor."""

    quantiles: tuple[float, ...]
    stable_values_s: tuple[float, ...]
    floor_s: float
    warmup_requests: int

    @property
    def thresholds_s(self) -> tuple[float, ...]:
        return tuple(v + self.floor_s for v in self.stable_values_s)

    @classmethod
    def from_warmup(
        cls,
        ok_latencies_s: Sequence[float] | NDArray[np.float64],
        floor_s: float,
        quantiles: tuple[float, ...] = QUANTILES,
    ) -> LatencyThresholds:
        """From the latencies of *successful* stable requests sent before any canary traffic."""
        lat = np.asarray(ok_latencies_s, dtype=float)
        if lat.size == 0:
            raise ParameterError("warmup", "no successful stable request before the first weight step")
        values = tuple(float(percentile(lat.tolist(), q) or 0.0) for q in quantiles)  # never None: size > 0
        return cls(quantiles, values, float(floor_s), int(lat.size))

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": f"stable-only warm-up traffic ({self.warmup_requests} successful requests) "
            "before the first weight step; frozen for the whole drill",
            "floor_ms": self.floor_s * 1000,
            **{
                f"stable_p{_pct(q)}_ms": v * 1000
                for q, v in zip(self.quantiles, self.stable_values_s, strict=True)
            },
            **{
                f"threshold_p{_pct(q)}_ms": t * 1000
                for q, t in zip(self.quantiles, self.thresholds_s, strict=True)
            },
        }


def _pct(q: float) -> str:
    return f"{q * 100:g}"


@dataclass(frozen=True)
class JudgeSettings:
    """The statistical judge's parameters (validated; names as the runbooks spell them)."""

    alpha: float = 0.01
    latency_rho: float = 0.2
    error_rho: float = 0.0
    floor_s: float = 0.005
    error_share: float = 0.5  # weight of the error e-process in the drill-level average
    quantiles: tuple[float, ...] = QUANTILES
    #: canary routing shares at which the versions carry comparable load (module docstring)
    latency_shares: tuple[float, float] = (0.4, 0.6)
    #: seconds after a share change before latency is compared again (the load regime settles)
    latency_settle_s: float = 1.0
    #: latency evidence is capped per time block of this many seconds (module docstring)
    latency_block_s: float = 1.0
    #: ... at this factor: one block (one instance's hiccup) multiplies a latency e-process by at
    #: most this much (``math.inf``: no cap)
    latency_block_cap: float = 4.0

    def latency_comparable(self, share: ArrayLike) -> NDArray[np.bool_]:
        """Whether a request routed at ``share`` may count as a latency event (module docstring)."""
        w = np.asarray(share, dtype=float)
        lo, hi = self.latency_shares
        return np.asarray((w >= lo - 1e-9) & (w <= hi + 1e-9), dtype=bool)

    def latency_min_blocks(self) -> int:
        """Time blocks with latency evidence that an abort on latency needs, at the least.

        With the cap every latency e-process grows at most ``latency_block_cap`` per block; even with
        all of them at the cap in every block, their share ``1 - error_share`` of the drill-level
        average must carry it (errors at about 1) to ``1/alpha``. A slowdown confined to fewer blocks
        (one instance's hiccup) cannot abort the drill on its own. 0 without a cap.
        """
        if not math.isfinite(self.latency_block_cap):
            return 0
        need = (1 / self.alpha - self.error_share) / (1 - self.error_share)
        return max(1, math.ceil(math.log(need) / math.log(self.latency_block_cap)))

    def validate(self) -> JudgeSettings:
        if not 0 < self.alpha < 1:
            raise ParameterError("alpha", f"{self.alpha} must be in (0, 1)")
        if not 0 <= self.latency_rho <= 10:
            raise ParameterError("latency_rho", f"{self.latency_rho} must be in 0..10 (relative increase)")
        if not 0 <= self.error_rho <= 10:
            raise ParameterError("error_rho", f"{self.error_rho} must be in 0..10 (relative increase)")
        if not 0 <= self.floor_s <= 10:
            raise ParameterError("latency_floor_ms", f"{self.floor_s * 1000:g} ms must be in 0..10000")
        if not 0 < self.error_share <= 1:
            raise ParameterError("error_share", f"{self.error_share} must be in (0, 1]")
        if not self.quantiles or not all(0 < q < 1 for q in self.quantiles):
            raise ParameterError("quantiles", f"{self.quantiles} must be quantile levels in (0, 1)")
        lo, hi = self.latency_shares
        if not 0 <= lo <= hi <= 1:
            raise ParameterError("latency_shares",
                                 f"{self.latency_shares} must be shares 0 <= low <= high <= 1")
        if not 0 <= self.latency_settle_s <= 600:
            raise ParameterError("latency_settle_s", f"{self.latency_settle_s} must be in 0..600 seconds")
        if not 0 < self.latency_block_s <= 60:
            raise ParameterError("latency_block_s", f"{self.latency_block_s} must be in 0<..60 seconds")
        if not self.latency_block_cap > 1:
            raise ParameterError("latency_block_cap", f"{self.latency_block_cap} must be > 1 (inf: no cap)")
        return self


class DrillJudge:
    """Errors + latency e-processes averaged into one drill-level e-process; reject at ``1/alpha``.

    Usage: :meth:`freeze` the latency thresholds from stable-only warm-up traffic, then
    :meth:`observe` batches of requests (any order inside a batch: they are sorted by send
    time; batches must not overlap in time). Before :meth:`freeze` only the error process runs.
    """

    def __init__(self, settings: JudgeSettings | None = None) -> None:
        self.settings = (settings or JudgeSettings()).validate()
        s = self.settings
        self.error = ConditionalEProcess("errors", rho=s.error_rho)
        self.latency: list[ConditionalEProcess] = []
        self.thresholds: LatencyThresholds | None = None
        self.max_e = 1.0
        self.e_value = 1.0
        self.rejected_at: float | None = None  # send time of the request whose outcome crossed
        self.rejected_after: int | None = None  # canary requests observed up to the crossing
        self.at_crossing: dict[str, float] = {}  # each component's e-value when the drill's crossed
        self.canary_n = 0
        self.stable_n = 0
        self.latency_compared = 0  # requests that could count as latency events (comparable load)
        self.canary_failed = 0
        self.stable_failed = 0
        self.last_sent = -math.inf
        self._canary_lat: list[NDArray[np.float64]] = []
        self._stable_lat: list[NDArray[np.float64]] = []

    # -- setup -------------------------------------------------------------------------------------------
    def freeze(self, thresholds: LatencyThresholds) -> None:
        if self.thresholds is not None:
            raise ParameterError("thresholds", "latency thresholds are frozen once per drill")
        self.thresholds = thresholds
        cap = self.settings.latency_block_cap
        self.latency = [
            ConditionalEProcess(f"latency>p{_pct(q)}", rho=self.settings.latency_rho,
                                block_cap=cap if math.isfinite(cap) else None)
            for q in thresholds.quantiles
        ]

    @property
    def weights(self) -> list[float]:
        """Convex weights of [errors, latency...] in the drill-level average."""
        s = self.settings
        if not self.latency:
            return [s.error_share]  # the rest of the mass sits at e = 1 (a constant is a martingale)
        share = (1 - s.error_share) / len(self.latency)
        return [s.error_share] + [share] * len(self.latency)

    @property
    def threshold(self) -> float:
        return 1.0 / self.settings.alpha

    @property
    def rejected(self) -> bool:
        return self.max_e >= self.threshold

    @property
    def p_value(self) -> float:
        """Anytime-valid p-value: 1 / running maximum of the drill-level e-process."""
        return min(1.0, 1.0 / self.max_e)

    # -- data --------------------------------------------------------------------------------------------
    def observe(
        self, sent: ArrayLike, is_canary: ArrayLike, failed: ArrayLike, latency_s: ArrayLike, w: ArrayLike,
        comparable: ArrayLike | None = None,
    ) -> bool:
        """Feed attributed requests (canary or stable); ``w`` = canary routing share when each was sent.

        ``comparable``: per request, whether its latency may be compared (known before it was sent;
        :class:`~clinops_lib.drills.feed.JudgeFeed` adds the settling time); default: ``w`` within
        ``latency_shares``. Returns whether the drill-level e-process has crossed ``1/alpha``
        (now or before).
        """
        sent_a = np.asarray(sent, dtype=float)
        n = sent_a.size
        if n == 0:
            return self.rejected
        order = np.argsort(sent_a, kind="stable")
        sent_a = sent_a[order]
        if sent_a[0] < self.last_sent:
            raise ParameterError(
                "records", "a batch overlaps the previous one in send time: feed in send order"
            )
        canary = np.asarray(is_canary, dtype=bool)[order]
        fail = np.asarray(failed, dtype=bool)[order]
        lat = np.asarray(latency_s, dtype=float)[order]
        ws = np.broadcast_to(np.asarray(w, dtype=float), (n,))[order]
        comp = (self.settings.latency_comparable(ws) if comparable is None
                else np.broadcast_to(np.asarray(comparable, dtype=bool), (n,))[order])
        self.last_sent = float(sent_a[-1])
        eff_lat = np.where(fail, np.inf, lat)
        self.canary_n += int(canary.sum())
        self.stable_n += int(n - canary.sum())
        self.canary_failed += int((fail & canary).sum())
        self.stable_failed += int((fail & ~canary).sum())
        self.latency_compared += int((comp & (ws > 0) & (ws < 1)).sum())
        self._canary_lat.append(eff_lat[canary])
        self._stable_lat.append(eff_lat[~canary])
        weights = self.weights
        blocks = np.floor(sent_a / self.settings.latency_block_s)
        paths = [self.error.update(canary, fail, ws)]
        combined = weights[0] * paths[0]
        if not self.latency:
            combined += 1.0 - weights[0]
        assert self.thresholds is not None or not self.latency
        for wt, proc, t in zip(
            weights[1:], self.latency, self.thresholds.thresholds_s if self.thresholds else (), strict=False
        ):
            paths.append(proc.update(canary, (eff_lat > t) & comp, ws, blocks))
            combined += wt * paths[-1]
        self.e_value = float(combined[-1])
        peak = int(np.argmax(combined))
        if combined[peak] > self.max_e:
            if self.max_e < self.threshold <= combined[peak]:
                first = int(np.argmax(combined >= self.threshold))
                self.rejected_at = float(sent_a[first])
                self.rejected_after = self.canary_n - int(canary[first + 1 :].sum())
                names = [p.name for p in (self.error, *self.latency)]
                self.at_crossing = {nm: float(path[first]) for nm, path in zip(names, paths, strict=True)}
            self.max_e = float(combined[peak])
        return self.rejected

    # -- evidence ----------------------------------------------------------------------------------------
    def components(self) -> dict[str, dict[str, Any]]:
        out = {}
        for wt, proc in zip(self.weights, [self.error, *self.latency], strict=True):
            out[proc.name] = {
                "weight": wt,
                "e_value": proc.e_value,
                "events": proc.events,
                "canary_events": proc.canary_events,
                "rho": proc.rho,
            }
            if proc.block_cap is not None:
                out[proc.name].update(uncapped_e_value=proc.uncapped_e_value,
                                      capped_blocks=proc.capped_blocks)
        return out

    def confidence_sequences(self, alpha_cs: float = 0.05) -> dict[str, Any]:
        """Anytime-valid confidence sequences at this moment (each at level ``1 - alpha_cs``)."""
        out: dict[str, Any] = {
            "label": f"{100 * (1 - alpha_cs):g}% anytime-valid confidence sequences (valid at the "
            "data-dependent moment of decision; not fixed-sample intervals)",
        }
        if self.canary_n and self.stable_n:
            d, lo, hi = error_rate_difference_cs(
                self.canary_failed, self.canary_n, self.stable_failed, self.stable_n, alpha_cs
            )
            out["error_rate_difference"] = {"estimate": d, "lo": lo, "hi": hi}
        c = np.concatenate(self._canary_lat) if self._canary_lat else np.zeros(0)
        s = np.concatenate(self._stable_lat) if self._stable_lat else np.zeros(0)
        for q in (0.5, 0.95, 0.99):
            if c.size and s.size:
                est, lo, hi = quantile_difference_cs(c, s, q, alpha_cs)
                out[f"p{_pct(q)}_difference_s"] = {"estimate": _fin(est), "lo": _fin(lo), "hi": _fin(hi)}
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "alpha": self.settings.alpha,
            "latency_rho": self.settings.latency_rho,
            "error_rho": self.settings.error_rho,
            "latency_floor_ms": self.settings.floor_s * 1000,
            "e_value": self.e_value,
            "max_e_value": self.max_e,
            "p_anytime": self.p_value,
            "rejected": self.rejected,
            "canary_requests": self.canary_n,
            "canary_errors": self.canary_failed,
            "stable_requests": self.stable_n,
            "stable_errors": self.stable_failed,
            "thresholds": self.thresholds.as_dict() if self.thresholds else None,
            "latency_shares": list(self.settings.latency_shares),
            "latency_settle_s": self.settings.latency_settle_s,
            "latency_compared_requests": self.latency_compared,
            "latency_block_s": self.settings.latency_block_s,
            "latency_block_cap": self.settings.latency_block_cap,
            "components": self.components(),
            "components_at_crossing": self.at_crossing,
            "combination": "weighted average of e-processes (a test supermartingale under the "
            "intersection of the nulls); Ville: P(ever >= 1/alpha) <= alpha",
        }

    def explain(self) -> str:
        """One sentence for the abort reason: which component carried the evidence *at the crossing*
        (aggressive bets can fall back within the same batch; the evidence is what crossed)."""
        comps = self.components()
        at = self.at_crossing or {n: c["e_value"] for n, c in comps.items()}
        name = max(comps, key=lambda n: comps[n]["weight"] * at[n])
        best = comps[name]
        return (
            f"anytime-valid judge e={self.max_e:.1f} >= 1/alpha={self.threshold:.0f}, carried by {name} "
            f"(e={at[name]:.1f} at the crossing; {best['canary_events']}/{best['events']} canary events "
            f"so far; {self.canary_failed}/{self.canary_n} canary vs {self.stable_failed}/{self.stable_n} "
            "stable errors)"
        )


def _fin(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


# -- confidence sequences ---------------------------------------------------------------------------------
def _betaln(a: NDArray[np.float64] | float, b: NDArray[np.float64] | float) -> Any:
    from scipy.special import betaln

    return betaln(a, b)


def _log_mixture(k: ArrayLike, n: int, mu: ArrayLike, a: float = 0.5, b: float = 0.5) -> Any:
    """log of the beta(a, b) mixture likelihood ratio against mean ``mu`` after ``k`` of ``n``."""
    k = np.asarray(k, dtype=float)
    mu = np.asarray(mu, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lk = np.where(k > 0, k * np.log(mu), 0.0)
        ln = np.where(n - k > 0, (n - k) * np.log1p(-mu), 0.0)
    return _betaln(a + k, b + n - k) - _betaln(a, b) - lk - ln


def bernoulli_cs(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Time-uniform confidence sequence for a Bernoulli mean after ``k`` successes in ``n``.

    ``{mu : M_n(mu) < 1/alpha}`` for the Jeffreys-mixture martingale ``M_n(mu)``; by Ville's
    inequality it contains the true mean at every ``n`` simultaneously with probability
    ``>= 1 - alpha``. The set is an interval (``-log L(mu)`` is convex); found by bisection.
    """
    if n == 0:
        return 0.0, 1.0
    const = float(_betaln(0.5 + k, 0.5 + n - k) - _betaln(0.5, 0.5))  # the mixture's numerator
    target = math.log(1 / alpha)
    phat = k / n

    def inside(mu: float) -> bool:
        log_lik = (k * math.log(mu) if k else 0.0) + ((n - k) * math.log1p(-mu) if n - k else 0.0)
        return const - log_lik < target

    def edge(inner: float, outer: float) -> float:
        for _ in range(50):
            mid = (inner + outer) / 2
            if inside(mid):
                inner = mid
            else:
                outer = mid
        return inner

    centre = min(max(phat, 1e-12), 1 - 1e-12)
    lower = 0.0 if inside(1e-15) else edge(centre, 1e-15)
    upper = 1.0 if inside(1 - 1e-15) else edge(centre, 1 - 1e-15)
    return min(lower, phat), max(upper, phat)


def error_rate_difference_cs(
    k_c: int, n_c: int, k_s: int, n_s: int, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Canary minus stable error rate with a time-uniform sequence (each arm at ``alpha / 2``)."""
    lc, uc = bernoulli_cs(k_c, n_c, alpha / 2)
    ls, us = bernoulli_cs(k_s, n_s, alpha / 2)
    return k_c / n_c - k_s / n_s, lc - us, uc - ls


def quantile_cs(values: ArrayLike, q: float, alpha: float = 0.05) -> tuple[float, float]:
    """Time-uniform confidence sequence for the ``q``-quantile (Howard & Ramdas 2022, fixed quantile).

    ``K_n`` = number of observations at or below the true quantile is Binomial(n, q); the
    Jeffreys-mixture boundary keeps it in ``[j_lo, j_hi]`` at all ``n`` with probability
    ``>= 1 - alpha``, hence the quantile lies in ``[X_(j_lo), X_(j_hi + 1))``.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return -math.inf, math.inf
    k = np.arange(n + 1)
    ok = np.flatnonzero(_log_mixture(k, n, q) < math.log(1 / alpha))
    j_lo, j_hi = int(ok[0]), int(ok[-1])
    lo = -math.inf if j_lo == 0 else float(x[j_lo - 1])
    hi = math.inf if j_hi + 1 > n else float(x[j_hi])
    return lo, hi


def quantile_difference_cs(
    canary: ArrayLike, stable: ArrayLike, q: float, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Canary minus stable ``q``-quantile with a time-uniform sequence (each arm at ``alpha / 2``)."""
    c = np.asarray(canary, dtype=float)
    s = np.asarray(stable, dtype=float)
    lc, uc = quantile_cs(c, q, alpha / 2)
    ls, us = quantile_cs(s, q, alpha / 2)
    qc = float(np.quantile(c, q, method="inverted_cdf"))  # no interpolation: failures are +inf
    qs = float(np.quantile(s, q, method="inverted_cdf"))
    est = qc - qs if math.isfinite(qc) and math.isfinite(qs) else math.inf
    with np.errstate(invalid="ignore"):
        lo = lc - us if not (math.isinf(lc) and math.isinf(us)) else -math.inf
        hi = uc - ls if not (math.isinf(uc) and math.isinf(ls)) else math.inf
    return est, lo, hi
