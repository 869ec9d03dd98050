"""A real single-node Kubernetes on any Debian machine without Docker (issue 13).

Layers, each importing only the ones above it:

* ``build``   the binaries, built once from source into ``/var/cache/clinops`` (Kubernetes
  v1.20.2 from Debian's source package, the Argo Rollouts controller and Prometheus from their
  Go modules)
* ``pki``, ``oci``, ``api``, ``host``   certificates, image archives, a small API client,
  and the host state a cluster leaves outside its folder
* ``argo``    the Rollouts controller's CRDs and RBAC
* ``metrics`` the host Prometheus' scrape job for the cluster's pods (``kubernetes_sd_configs``)
* ``cluster`` the lifecycle: supervised processes, health checks, kubeconfig, delete
* ``images``  the project's images built with buildah and imported into containerd

The command line is :mod:`clinops_lib.cli.cluster` (``clinops cluster build|create|delete|status``).
"""

from .build import KUBERNETES_VERSION, BuildCache
from .cluster import ClusterConfig, ClusterInfo, ClusterPorts, DebianCluster

__all__ = [
    "KUBERNETES_VERSION",
    "BuildCache",
    "ClusterConfig",
    "ClusterInfo",
    "ClusterPorts",
    "DebianCluster",
]
