"""What a drill returns: its outcome, its events and everything needed to draw and audit it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from . import judge as J
from .loadgen import RequestRecord

__all__ = ["DrillEvent", "DrillResult", "Outcome", "SwitchCheck"]

Outcome = Literal["PROMOTED", "ABORTED", "PAUSED", "AWAITING_APPROVAL"]


@dataclass
class DrillEvent:
    at: float
    kind: str  # deploy, weight, pause, interval, decision, abort, retire, promote, switch, split, error
    weight: int | None
    detail: str


@dataclass(frozen=True)
class SwitchCheck:
    """Who served users around one blue-green switch, from the per-request records."""

    at: float
    switch_seconds: float
    versions_before: dict[str, int]  # version (or ``<status>`` for a failed request) -> requests
    versions_after: dict[str, int]
    failed_requests_around_switch: int
    requests_around_switch: int


@dataclass
class DrillResult:
    """Outcome plus everything needed to draw and audit it."""

    kind: Literal["canary", "blue-green"]
    service: str
    stable_version: str
    canary_version: str
    outcome: Outcome
    reason: str
    started_at: float
    decided_at: float
    ended_at: float
    first_canary_traffic_at: float | None
    events: list[DrillEvent]
    intervals: list[J.IntervalVerdict]
    records: list[RequestRecord]
    load: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]]
    interval_s: float
    error_test: dict[str, Any] = field(default_factory=dict)
    #: numbers only (e.g. ``failed_user_requests_total``); the switches have their own typed rows
    checks: dict[str, float] = field(default_factory=dict)
    switches: dict[str, SwitchCheck] = field(default_factory=dict)  # blue-green: promotion, rollback, ...

    @property
    def seconds_to_decision(self) -> float | None:
        """From the first canary request to the decision (the detection time of an abort)."""
        if self.first_canary_traffic_at is None:
            return None
        return self.decided_at - self.first_canary_traffic_at

    @property
    def abort_at(self) -> float | None:
        """When all traffic went back to stable (None: no abort, or the abort failed)."""
        return next((e.at for e in self.events if e.kind == "abort"), None)

    @property
    def abort_failure(self) -> str | None:
        """Why the abort (or the canary's retirement) could not be carried out; None when it was."""
        failed = [e.detail for e in self.events if e.kind == "error" and "FAILED" in e.detail]
        return "; ".join(failed) or None

    @property
    def canary_requests_before_decision(self) -> int:
        return sum(1 for r in self.records if r.version == self.canary_version and r.sent <= self.decided_at)

    def interval_rows(self) -> list[dict[str, Any]]:
        return [iv.as_row() for iv in self.intervals]

    def records_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([r.as_dict() for r in self.records])

    def events_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([e.__dict__ for e in self.events])

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "service": self.service,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "outcome": self.outcome,
            "reason": self.reason,
            "seconds_to_decision": self.seconds_to_decision,
            "canary_requests_before_decision": self.canary_requests_before_decision,
            "duration_s": self.ended_at - self.started_at,
            "intervals": len(self.intervals),
            "interval_s": self.interval_s,
            "load": self.load,
            "error_test": self.error_test,
            "checks": self.checks,
            "switches": {name: asdict(c) for name, c in self.switches.items()},
        }
