"""Where the platform runs: the :class:`~.base.Target` contract and its registry, and the targets.

:mod:`.base` is the contract runbooks and drills use; :mod:`.local` runs real components as
supervised processes on loopback; :mod:`.kube` drives a Kubernetes cluster (kind or any
kubeconfig). Implementations are loaded lazily by name through the registry.
"""

from __future__ import annotations

from .base import (
    TRACKS,
    ComponentStatus,
    Health,
    Progress,
    Target,
    Track,
    TrackState,
    get_target,
    instant_value,
    register_target,
    target_names,
)

__all__ = [
    "TRACKS",
    "ComponentStatus",
    "Health",
    "Progress",
    "Target",
    "Track",
    "TrackState",
    "get_target",
    "instant_value",
    "register_target",
    "target_names",
]
