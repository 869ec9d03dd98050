"""Where the platform runs: the :class:`~.base.Target` contract and its registry, and the targets.

:mod:`.base` is the contract runbooks and drills use; :mod:`.local` runs real components as
supervised processes on loopback; :mod:`.kube` drives a Kubernetes cluster (kind or any
kubeconfig). Implementations are loaded lazily by name through the registry.
"""

from __future__ import annotations

from . import base as _base
from .base import *  # noqa: F403 - this package's API is the contract's public names

__all__ = list(_base.__all__)
