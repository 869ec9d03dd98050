"""From the load generators' records to the anytime-valid judge, in send order.

Why a feed: the load generators append a record when a request *completes*, so the records of
one poll are in completion order, and a slow request sent early completes after fast ones sent
later. The judge's guarantee holds for requests taken in the order they were *sent*
(:mod:`clinops_lib.drills.anytime`: completion order depends on latency, and batching one
version's events ahead of the other's breaks it). So the feed holds back every record until all
requests sent before it have completed (or timed out): per generator, records up to the first
sequence number still in flight are ready (a generator sends in sequence order, so its next
answer was sent after all of them); across generators, only records sent up to the earliest
generator's last ready send time are fed. A generator is opened before it sends (until its
first answer it holds everything back) and closed once stopped (then it holds nothing back).

The routing share of each request is the weight in force when it was *sent* (the router's
configuration, known in advance). Around a weight change, where a request may meet either
weight, the larger share is used, and the share is never taken below the canary's fraction of
the last 200 attributed requests: overstating the share only makes a canary event count for
less, so both keep the false-alarm bound (a stable event's factor does not grow with it).
Whether a request's latency is compared at all is decided from the *configured* share and the
time since it was applied (``JudgeSettings.latency_shares`` and ``latency_settle_s``; why in
:mod:`clinops_lib.drills.anytime`), never from the overstated one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from .anytime import DrillJudge, LatencyThresholds

__all__ = ["JudgeFeed", "RecordLike"]


class RecordLike(Protocol):
    seq: int
    sent: float
    status: int
    version: str

    @property
    def latency_s(self) -> float: ...

    @property
    def failed(self) -> bool: ...

    @property
    def ok(self) -> bool: ...


class JudgeFeed:
    """Buffers records per generator and feeds the judge the send-ordered prefix that is complete."""

    def __init__(self, judge: DrillJudge, canary: str, stable: str) -> None:
        self.judge = judge
        self.canary = canary
        self.stable = stable
        self._pending: dict[str, dict[int, RecordLike]] = {}
        self._next_seq: dict[str, int] = {}
        self._ready: dict[str, list[RecordLike]] = {}
        self._last_ready: dict[str, float] = {}
        self._closed: set[str] = set()
        self._shares: list[tuple[float, float, float]] = [(-np.inf, -np.inf, 0.0)]  # (from, until, share)
        self._recent: deque[bool] = deque(maxlen=200)
        self.warmup_ok: list[float] = []
        self.fed = 0

    # -- routing -----------------------------------------------------------------------------------------
    def set_share(self, started: float, applied: float, share: float) -> None:
        """The canary's routing share from a weight change begun at ``started``, in force at ``applied``."""
        self._shares.append((started, applied, share))

    def share_at(self, sent: float) -> float:
        return self._routing_at(sent)[0]

    def _routing_at(self, sent: float) -> tuple[float, float]:
        """(canary share, when the change in force at ``sent`` was applied), in one pass."""
        share, in_force_since = 0.0, -np.inf
        for i, (start, applied, s) in enumerate(self._shares):
            if sent >= start:
                share, in_force_since = s, applied
                if sent <= applied + 0.05 and i:  # in the change: either weight may have served it
                    share = max(s, self._shares[i - 1][2])
        return share, in_force_since

    # -- records -----------------------------------------------------------------------------------------
    def open(self, label: str) -> None:
        """A generator is about to send: nothing later may be fed before its answers arrive."""
        self._pending.setdefault(label, {})
        self._next_seq.setdefault(label, 0)
        self._ready.setdefault(label, [])
        self._last_ready.setdefault(label, -np.inf)
        self._closed.discard(label)

    def close(self, label: str) -> None:
        """A generator has stopped and all its records were added: it holds nothing back any more."""
        self._closed.add(label)

    def add(self, label: str, records: Iterable[RecordLike]) -> None:
        if label not in self._ready:
            self.open(label)
        pend = self._pending[label]
        ready = self._ready[label]
        for r in records:
            pend[r.seq] = r
        nxt = self._next_seq[label]
        while nxt in pend:
            r = pend.pop(nxt)
            ready.append(r)
            self._last_ready[label] = max(self._last_ready[label], r.sent)
            nxt += 1
        self._next_seq[label] = nxt

    def flush(self, final: bool = False) -> bool:
        """Feed every record that no earlier-sent request can still precede; returns ``judge.rejected``.

        ``final`` feeds all buffered records (the generators have stopped)."""
        labels = list(self._ready)
        if not labels:
            return self.judge.rejected
        if final:
            for label in labels:
                self._ready[label].extend(sorted(self._pending[label].values(), key=lambda r: r.seq))
                self._pending[label].clear()
            cut = np.inf
        else:
            # an open generator's next answer was sent after its last ready one: that is its cut
            cut = min(np.inf if lb in self._closed and not self._pending[lb] else self._last_ready[lb]
                      for lb in labels)
        batch: list[RecordLike] = []
        for label in labels:
            ready = self._ready[label]
            k = 0
            while k < len(ready) and ready[k].sent <= cut:
                k += 1
            batch.extend(ready[:k])
            del ready[:k]
        batch.sort(key=lambda r: r.sent)
        return self._feed(batch)

    def _feed(self, batch: list[RecordLike]) -> bool:
        sent, canary, failed, lat, share, configured, since = [], [], [], [], [], [], []
        for r in batch:
            if r.status <= 0 or r.version not in (self.canary, self.stable):
                continue  # dropped, connection errors and proxy answers carry no version
            is_canary = r.version == self.canary
            w, applied = self._routing_at(r.sent)
            configured.append(w)
            since.append(applied)
            if len(self._recent) >= 100:
                w = max(w, sum(self._recent) / len(self._recent)) if 0 < w < 1 else w
            if w == 0.0 and not is_canary and self.judge.thresholds is None and r.ok:
                self.warmup_ok.append(r.latency_s)
            if w > 0:
                self._recent.append(is_canary)
            sent.append(r.sent)
            canary.append(is_canary)
            failed.append(r.failed)
            lat.append(r.latency_s)
            share.append(w)
        self.fed += len(sent)
        if not sent:
            return self.judge.rejected
        # latency is compared from the configured share, settled (module docstring), never the overstated one
        settings = self.judge.settings
        settled = np.asarray(sent) >= np.asarray(since) + settings.latency_settle_s
        comparable = settings.latency_comparable(configured) & settled
        return self.judge.observe(sent, canary, failed, lat, share, comparable)

    def freeze(self, floor_s: float) -> LatencyThresholds | None:
        """Freeze the latency thresholds from the stable-only warm-up fed so far (None: no warm-up)."""
        if self.judge.thresholds is not None:
            return self.judge.thresholds
        if not self.warmup_ok:
            return None
        th = LatencyThresholds.from_warmup(self.warmup_ok, floor_s, self.judge.settings.quantiles)
        self.judge.freeze(th)
        return th
