#!/usr/bin/env bash
# Installs what the single-node Debian cluster needs (issue 13), then builds its binaries once.
#   scripts/setup-cluster.sh            Debian packages + deb-src line + build (cached)
#   scripts/setup-cluster.sh --no-build only the packages and the deb-src line
# The build itself is the project's code (`clinops cluster build`): Kubernetes v1.20.2 from
# Debian's source package and the Argo Rollouts controller from its Go module, cached under
# /var/cache/clinops/ (CLINOPS_CACHE_DIR) outside the checkout, Prometheus with kubernetes_sd
# from its Go module, and the service images (buildah); README "A real Kubernetes without
# Docker" has the measured cold and warm times.
# A failing step exits 1 naming the step and its log; every step has a timeout.
# Idempotent: a second run installs and builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[ "${1:-}" = "--no-build" ] && build=0

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
log() { printf '\033[1m[setup-cluster]\033[0m %s\n' "$*"; }

# 1. Packages: the build toolchain (Debian's Go 1.19 for Kubernetes 1.20), the node runtime,
#    and buildah for images without Docker. kubectl is not needed (the project uses the API).
pkgs=(golang-go golang-github-modern-go-reflect2-dev make rsync gcc libc6-dev openssl
      etcd-server containerd runc containernetworking-plugins iptables conntrack socat iproute2
      kmod buildah debootstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# 2. Debian's `kubernetes` source package needs a deb-src line for bookworm.
src=/etc/apt/sources.list.d/clinops-debian-src.sources
new_src=0
if [ ! -f "$src" ]; then
  log "adding a deb-src line for bookworm ($src)"
  $SUDO tee "$src" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  new_src=1
fi
if [ "${#missing[@]}" -gt 0 ] || [ "$new_src" = 1 ]; then
  log "apt-get update"
  $SUDO apt-get update -qq -o DPkg::Lock::Timeout=600
fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's postinst may start the packaged containerd/etcd where an init system runs; the
# cluster runs its own instances on its own sockets and ports, so those are left alone.

# 3. The binaries (cached; the log names each step).
if [ "$build" = 1 ]; then
  # all three service images: with buildah's overlay driver they take about two minutes cold
  # together (the pip layer is built once), seconds warm; Prometheus (kubernetes_sd) is built too
  log "building the cluster's binaries, Prometheus and images (cached under ${CLINOPS_CACHE_DIR:-/var/cache/clinops})"
  .venv/bin/python -m clinops_lib.cli cluster build --images
fi
