"""Where the platform runs: the :class:`~.base.Target` contract and its registry, and the targets.

:mod:`.base` is the contract runbooks and drills use; :mod:`.local` runs real components as
supervised processes on loopback; :mod:`.kube` drives a Kubernetes cluster (kind or any
kubeconfig). Implementations are loaded lazily by name through the registry.
"""

from __future__ import annotations

from .base import ComponentStatus, Health, Progress, Target, Track, TrackState, get_target, register_target

__all__ = [
    "ComponentStatus",
    "Health",
    "Progress",
    "Target",
    "Track",
    "TrackState",
    "get_target",
    "register_target",
]
