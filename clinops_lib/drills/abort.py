"""Where every release stands, and stopping one: the tracks with their weights, ``clinops abort``.

Why a module of its own: a drill that ends normally aborts through its session, but a drill
can also end abnormally — the runner killed outright, a kernel that died, a laptop closed —
and leave a canary holding part of the live traffic with nothing watching it. Three callers
need the same two operations, on every target, through the :class:`~clinops_lib.targets.base.Target`
contract only:

* ``clinops status`` shows every track of every service with its share of traffic
  (:func:`track_rows`), so a stray canary is visible;
* ``clinops up`` names stray canaries (:func:`stray_canaries`) and offers ``clinops abort SERVICE``;
* ``clinops abort SERVICE`` and the runner, after an interrupted run, stop a release
  (:func:`abort_release`): all traffic to stable first, then the canary (or green) is stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..exceptions import ClinopsError, TargetError
from ..targets.base import Target

__all__ = ["TrackRow", "abort_release", "services_of", "stray_canaries", "track_rows"]


@dataclass(frozen=True)
class TrackRow:
    """One track of one service: what runs there and the share of user traffic it gets."""

    service: str
    track: str  # stable (blue) or canary (green)
    version: str
    running: bool
    weight: int | None  # percent of user traffic; None when the traffic layer could not be read
    note: str = ""


def services_of(target: Target) -> list[str]:
    """The platform's services (the charts' list: the same on every target)."""
    from .config import _known_services

    return _known_services(target.settings.environment)


def track_rows(target: Target, services: Sequence[str] | None = None) -> list[TrackRow]:
    """Every track of every service with its weight; a part that cannot be read says why."""
    rows: list[TrackRow] = []
    for service in services if services is not None else services_of(target):
        try:
            tracks = target.tracks(service)
        except ClinopsError as e:
            rows.append(TrackRow(service, "?", "", False, None, f"tracks unreadable: {e}"))
            continue
        note = ""
        try:
            canary_weight: int | None = int(target.canary_weight(service))
        except ClinopsError as e:
            canary_weight, note = None, f"weights unreadable: {e}"
        for name, state in tracks.items():
            if canary_weight is None:
                weight = None
            elif name == "canary":
                weight = canary_weight
            else:
                weight = 100 - canary_weight
            rows.append(TrackRow(service, name, state.version, state.running, weight, note))
    return rows


def stray_canaries(rows: Sequence[TrackRow]) -> list[TrackRow]:
    """Canary (green) tracks that run or hold traffic: left by a drill that did not finish,
    unless one is running right now."""
    return [r for r in rows if r.track == "canary" and (r.running or (r.weight or 0) > 0)]


def abort_release(target: Target, service: str) -> list[str]:
    """All traffic of ``service`` to stable, then stop its canary; returns what was done.

    Raises :class:`TargetError` when traffic could not be moved back to stable (that is the
    part that matters); a canary that cannot be stopped afterwards is reported, not raised.
    """
    done = []
    target.abort(service)  # all traffic to stable first: users stop reaching the canary at once
    done.append(f"{service}: all traffic on stable")
    try:
        target.retire(service, "canary")
        done.append(f"{service}: canary stopped")
    except TargetError as e:
        done.append(f"{service}: canary NOT stopped ({e})")
    return done
