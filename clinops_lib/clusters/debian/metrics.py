"""The host's Prometheus scraping the cluster's pods through ``kubernetes_sd_configs`` (issue 13, point 5).

The cluster has no Prometheus inside (no image of it without a registry), so the Prometheus
that the PromQL analysis queries runs on the host, beside the cluster: the same process the
local target runs, with one more scrape job. That job discovers the pods from this cluster's
API server (``role: pod``) and keeps those whose pod template says so, by the annotations the
charts set (``clinops.servicePodTemplate``)::

    prometheus.io/scrape: "true"     only these pods are scraped
    prometheus.io/port:   "8080"     the container port serving the metrics
    prometheus.io/path:   /metrics   the path (default /metrics)

Only ``Running`` pods are kept (a pending pod has no address yet; a finished Job's has no
server). The pod's own ``service``/``version`` labels win (``honor_labels``), as on the local
target, so the charts' AnalysisTemplate queries (``http_requests_total{service=..,version=..}``)
read the same series on both paths; ``namespace``, ``pod`` and the Rollouts pod-template hash
are added for telling the stable pods from the canary ones.

Identity: a client certificate of its own (``clinops-prometheus``, minted with the cluster's
PKI like the Rollouts controller's) bound to a ClusterRole that may only ``get/list/watch``
pods: the discovery needs no more, and the RBAC authorizer refuses it everything else.

Debian's ``prometheus`` (2.42) is built without Kubernetes discovery (its config parser rejects
``kubernetes_sd_configs``); the binary that reads this job is built from the Prometheus Go
module by :func:`clinops_lib.clusters.debian.build.build_prometheus` (``promtool`` beside it;
:func:`check_config` runs it on a written configuration).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...exceptions import ConfigError, PrerequisiteError
from .pki import Pki

__all__ = [
    "POD_JOB",
    "PROMETHEUS_CLIENT",
    "PROMETHEUS_CLIENT_IDENTITY",
    "PROMETHEUS_USER",
    "SCRAPE_ANNOTATIONS",
    "ApiAccess",
    "check_config",
    "pod_scrape_job",
    "pod_scrape_rbac",
]

#: the certificate's file stem in the cluster's PKI folder, and the user it names
PROMETHEUS_CLIENT = "prometheus"
PROMETHEUS_USER = "clinops-prometheus"
#: for ``make_pki(extra_clients=...)``: file stem -> (group, user)
PROMETHEUS_CLIENT_IDENTITY: dict[str, tuple[str | None, str]] = {PROMETHEUS_CLIENT: (None, PROMETHEUS_USER)}
POD_JOB = "kubernetes-pods"
#: the pod annotations the job reads (the charts' pod template sets them)
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


def _meta(annotation: str) -> str:
    """``prometheus.io/scrape`` -> ``__meta_kubernetes_pod_annotation_prometheus_io_scrape``."""
    return "__meta_kubernetes_pod_annotation_" + "".join(c if c.isalnum() else "_" for c in annotation)


@dataclass(frozen=True)
class ApiAccess:
    """How Prometheus reaches and authenticates to the API server (files it reads itself)."""

    server: str
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def from_pki(cls, pki: Pki, server: str) -> ApiAccess:
        return cls(server, pki.ca, pki.cert(PROMETHEUS_CLIENT), pki.key(PROMETHEUS_CLIENT))

    def missing(self) -> list[str]:
        return [str(p) for p in (self.ca_file, self.cert_file, self.key_file) if not p.is_file()]


def pod_scrape_job(
    access: ApiAccess,
    *,
    namespaces: Sequence[str] = (),
    job_name: str = POD_JOB,
    scrape_interval: str | None = None,
) -> dict[str, Any]:
    """One ``scrape_configs`` entry: the annotated, running pods of the cluster behind ``access``.

    ``namespaces`` limits the discovery (all namespaces when empty).
    """
    if not access.server.startswith("https://"):
        raise ConfigError(f"kubernetes_sd: the API server URL must be https://, got {access.server!r}")
    sd: dict[str, Any] = {
        "role": "pod",
        "api_server": access.server,
        "tls_config": {
            "ca_file": str(access.ca_file),
            "cert_file": str(access.cert_file),
            "key_file": str(access.key_file),
        },
    }
    if namespaces:
        sd["namespaces"] = {"names": list(namespaces)}
    scrape, port, path = (_meta(a) for a in SCRAPE_ANNOTATIONS)
    job: dict[str, Any] = {
        "job_name": job_name,
        "honor_labels": True,  # the service's own `service`/`version` labels win, as locally
        "kubernetes_sd_configs": [sd],
        "relabel_configs": [
            {"source_labels": [scrape], "action": "keep", "regex": "true"},
            {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "keep", "regex": "Running"},
            {
                "source_labels": [path],
                "action": "replace",
                "regex": "(.+)",
                "target_label": "__metrics_path__",
            },
            {
                # one target per pod at the annotated port (role: pod makes one per declared port)
                "source_labels": ["__address__", port],
                "action": "replace",
                "regex": r"([^:]+)(?::\d+)?;(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_label_rollouts_pod_template_hash"],
                "regex": "(.+)",
                "target_label": "rollouts_pod_template_hash",
            },
        ],
    }
    if scrape_interval:
        job["scrape_interval"] = scrape_interval
    return job


def pod_scrape_rbac() -> list[dict[str, Any]]:
    """The ClusterRole and binding of :data:`PROMETHEUS_USER`: pods, read-only, nothing else."""
    name = PROMETHEUS_USER
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "clinops"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "clinops"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
        },
    ]


def check_config(promtool: Path, config: Path, *, timeout: float = 60.0) -> str:
    """``promtool check config`` on ``config``; returns its report, raises with it on rejection.

    promtool also checks that the rule files and the TLS files the config names exist.
    """
    if not promtool.is_file():
        raise PrerequisiteError(
            f"promtool not built at {promtool} (`clinops cluster build` builds Prometheus from its module)"
        )
    try:
        out = subprocess.run(
            [str(promtool), "check", "config", str(config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ConfigError(f"promtool check config {config}: no answer within {timeout:g}s") from e
    report = (out.stdout + out.stderr).strip()
    if out.returncode != 0:
        raise ConfigError(f"promtool rejects {config}: {report[-800:]}")
    return report
