#!/usr/bin/env bash
# Quick start, command 2: install what the tests need and run the whole suite (the real local
# components are started by the tests themselves and stopped again).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
# The cluster tier (tests/cluster, issue 13): one real single-node Kubernetes per run, started and
# deleted by the tier itself. Its Debian packages are installed here; its binaries (Kubernetes from
# Debian's source package, the Argo Rollouts controller and Prometheus from their Go modules, the
# service images) are built once into /var/cache/clinops (CLINOPS_CACHE_DIR) by the tier's first
# test, at lower CPU priority, in one pytest-xdist worker while the other runs the rest of the
# suite. README "A real Kubernetes without Docker" has the cold and warm times.
# CLINOPS_CLUSTER_TESTS=0 skips the tier (a machine that cannot run a cluster: it then says why);
# CLINOPS_TEST_WORKERS sets the number of pytest-xdist workers (0: no xdist, one process).
: "${CLINOPS_CLUSTER_TESTS:=1}"
: "${CLINOPS_TEST_WORKERS:=2}"
export CLINOPS_CLUSTER_TESTS
if [ "$CLINOPS_CLUSTER_TESTS" = 1 ]; then
  bash scripts/setup-cluster.sh --no-build
fi
workers=()
if [ "$CLINOPS_TEST_WORKERS" != 0 ]; then
  # one group per module and the cluster tier as one group, heaviest tier first (tests/conftest.py)
  workers=(-n "$CLINOPS_TEST_WORKERS" --dist loadgroup --no-loadscope-reorder)
fi
.venv/bin/python -m pytest tests "${workers[@]}" "$@"
