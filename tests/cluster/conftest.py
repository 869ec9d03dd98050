"""The ``cluster`` tier: one real single-node Kubernetes (clinops_lib/clusters/debian) per test run.

Runs when ``CLINOPS_CLUSTER_TESTS=1`` (the README's test command, ``scripts/test.sh``, sets it;
a plain ``pytest`` does not, since only one cluster can run per machine: ``cni0``, iptables
chains and ``/var/lib/kubelet`` are host-wide). A cold machine first builds the binaries
(Kubernetes from Debian's source package, the Argo Rollouts controller and Prometheus from their
Go modules, the images: 15-30 min on 2 shared cores; seconds once cached under
/var/cache/clinops), in this tier's pytest-xdist worker while the other runs the rest.
The tier skips with the reason only when the cluster cannot run here at all (not root, packages
missing: `bash scripts/setup-cluster.sh` installs them); a failing build or component fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import enterable_tmpdir
from ports import PortAllocator

from clinops_lib.clusters.debian import BuildCache, ClusterConfig, DebianCluster
from clinops_lib.clusters.debian.build import build_prometheus, missing_build_prerequisites
from clinops_lib.clusters.debian.images import ImageBuilder, chart_references
from clinops_lib.clusters.debian.metrics import ApiAccess, pod_scrape_job
from clinops_lib.config import Settings
from clinops_lib.targets.local import supervisor
from clinops_lib.targets.local.components import Prometheus

ROOT = Path(__file__).resolve().parent.parent.parent
#: the services/ folders whose images the tier's pods run: the gateway in the node, Rollouts and
#: Prometheus tests, all three in the runbook tests (01-deploy-levels). Built once here, cached by
#: input hash: with buildah's overlay driver the base and all three take ~100 s cold
#: (benchmarks/results/images.json), seconds when cached.
TIER_IMAGES = ("clinical-gateway", "model-serving", "model-training")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.cluster)


def _progress(message: str) -> None:
    print(f"[cluster tier {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Package scope (this folder is a package): the cluster and what lives on it are deleted right after
# the tier's last test, not at the end of the run, so later tests do not share the machine with it.
@pytest.fixture(scope="package")
def debian_cluster() -> Iterator[DebianCluster]:
    if os.environ.get("CLINOPS_CLUSTER_TESTS") != "1":
        pytest.skip("CLINOPS_CLUSTER_TESTS is not 1: the cluster tier runs from scripts/test.sh "
                    "(one cluster per machine)")
    cache = BuildCache(Settings.from_env().cache_dir)
    cluster = DebianCluster(ClusterConfig(cache=cache), progress=_progress)
    missing = cluster.missing_runtime()
    if not cluster.config.cache.kubernetes_ready() or not cluster.config.cache.rollouts_ready():
        missing += missing_build_prerequisites()
    if missing:
        pytest.skip(
            "the cluster cannot run on this machine, missing: "
            + "; ".join(missing)
            + " (bash scripts/setup-cluster.sh)"
        )
    if cluster.running():  # someone's cluster (`clinops cluster create`): use it, leave it running
        _progress("using the cluster that is already running; it stays running")
        yield cluster
        return
    cluster.create()
    try:
        yield cluster
    finally:
        left = cluster.delete()
    assert left == [], f"delete left traces behind: {left}"


@pytest.fixture(scope="package")
def kube(debian_cluster: DebianCluster) -> Iterator[Any]:
    """The official Python client on the cluster's admin kubeconfig."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(debian_cluster.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture(scope="package")
def local_images(debian_cluster: DebianCluster) -> dict[str, str]:
    """The images the tier's pods run, built with buildah (cached by input hash; setup-cluster.sh
    builds them first with progress), imported into containerd."""
    references = {k: v for k, v in chart_references(ROOT).items() if k in TIER_IMAGES}
    built = ImageBuilder(ROOT, debian_cluster.config.cache.root, progress=_progress).build(references)
    for image in built:
        debian_cluster.import_image(Path(image.archive))
    present = set(debian_cluster.images())
    assert set(references.values()) <= present, f"not imported: {set(references.values()) - present}"
    return references


@pytest.fixture(scope="package")
def host_prometheus(debian_cluster: DebianCluster, port_allocator: PortAllocator) -> Iterator[Prometheus]:
    """The host Prometheus the kubeconfig target queries on this cluster (``CLINOPS_PROMETHEUS_URL``),
    on a port block of the harness, as the target runs it (``HostServices.prometheus_options``):
    the local target's generated config, the binary built from the Prometheus Go module, and the
    pod job discovering this cluster's pods through ``kubernetes_sd_configs``."""
    cache = debian_cluster.config.cache
    build_prometheus(cache, progress=_progress)  # cached: seconds
    root = enterable_tmpdir("clinops-cluster-prom-")
    block = port_allocator.block()
    settings = Settings(state_dir=root / "state", ports=block.portmap())
    access = ApiAccess.from_pki(debian_cluster.pki, debian_cluster.server)
    prom = Prometheus(settings, binary=cache.prometheus, extra_scrape_configs=[pod_scrape_job(access)])
    prom.prepare()
    proc = supervisor.start(prom.spec())
    try:
        supervisor.wait_healthy(proc, prom.healthy, prom.timeout, "prometheus /-/ready")
        yield prom
    finally:
        supervisor.stop(proc, timeout=15.0)
        shutil.rmtree(root, ignore_errors=True)
        port_allocator.release(block)
