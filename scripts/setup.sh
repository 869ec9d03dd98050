#!/usr/bin/env bash
# Installs everything clinops needs on a fresh Debian/Ubuntu machine (root, or a user with sudo).
#   scripts/setup.sh           runtime: Debian services, the project venv, LocalStack's own venv, the kernel
#   scripts/setup.sh --tests   the same plus what the test suite needs (dev group, chromium)
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--tests" ] && with_tests=1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages: the real services the local target supervises.
apt_pkgs=(haproxy prometheus redis-server postgresql git curl ca-certificates)
[ "$with_tests" = 1 ] && apt_pkgs+=(chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts packaged daemons where an init system runs; the local target runs its own
# instances on its own ports, so the packaged ones are left alone (never stopped by us).

# 2. uv, then the project's locked environment.
if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  python3 -m pip install -q uv 2>/dev/null || python3 -m pip install -q --break-system-packages uv
fi
UV=$(command -v uv || echo "$HOME/.local/bin/uv")
if [ "$with_tests" = 1 ]; then
  log "uv sync (with the dev group)"
  "$UV" sync --frozen --compile-bytecode -q
  # An environment made before the HCL parser switch (python-hcl2 -> bc-python-hcl2) lost `hcl2`
  # when uv removed python-hcl2's files (both write it): reinstall the one the lock names.
  .venv/bin/python -c "import hcl2.api" 2>/dev/null \
    || "$UV" sync --frozen --compile-bytecode -q --reinstall-package bc-python-hcl2
else
  log "uv sync"
  "$UV" sync --frozen --no-dev --compile-bytecode -q
fi

# 3. LocalStack in its own environment, from its own hash-pinned lock.
if ! .venv-localstack/bin/python -c "import localstack" 2>/dev/null; then
  log "LocalStack 4.12.0 into .venv-localstack"
  "$UV" venv -q --python "$(.venv/bin/python -c 'import sys; print(sys.executable)')" .venv-localstack
  VIRTUAL_ENV=.venv-localstack "$UV" pip install -q --compile-bytecode --require-hashes -r localstack/requirements.lock
fi

# 3b. (tests) checkov in its own environment, from its own hash-pinned lock, so its dependency tree
# never shares an environment with the project's (see tools/checkov/requirements.in). The lock's hash is stamped into the venv so a changed lock reinstalls.
if [ "$with_tests" = 1 ]; then
  lock_sum=$(sha256sum tools/checkov/requirements.lock | cut -d' ' -f1)
  if [ "$(cat .venv-checkov/.lock-sha256 2>/dev/null)" != "$lock_sum" ] || ! [ -x .venv-checkov/bin/checkov ]; then
    log "checkov into .venv-checkov"
    rm -rf .venv-checkov
    "$UV" venv -q --python "$(.venv/bin/python -c 'import sys; print(sys.executable)')" .venv-checkov
    VIRTUAL_ENV=.venv-checkov "$UV" pip install -q --compile-bytecode --require-hashes -r tools/checkov/requirements.lock
    echo "$lock_sum" > .venv-checkov/.lock-sha256
  fi
fi

# 3c. Tests: the Kubernetes 1.20 JSON schemas the chart tests validate against (the locked
# kubernetes-validate ships 1.25+ only), hash-pinned, cached outside the checkout.
K8S_SCHEMAS=/var/cache/clinops/kubernetes-validate/1.28.3
if [ "$with_tests" = 1 ] && [ ! -d "$K8S_SCHEMAS/kubernetes_validate/kubernetes-json-schema/v1.20.0-local-strict" ]; then
  log "Kubernetes 1.20 schemas (kubernetes-validate 1.28.3) into $K8S_SCHEMAS"
  $SUDO mkdir -p "$K8S_SCHEMAS"
  $SUDO "$UV" pip install -q --target "$K8S_SCHEMAS" --no-deps --require-hashes --python .venv/bin/python \
    -r tests/schemas/kubernetes-validate-1.28.3.txt
fi

# 5. Issue 14 — the pipeline's runtimes (Levels 1-6 beyond the services); the local target starts them.
#    Debian: Java 17 (Kafka, Spark), Maven (resolves Kafka), the PostgreSQL JDBC driver (Spark), Alertmanager.
#    Kafka: the broker's jars from Maven Central, cached outside the checkout per version.
#    .venv-pipeline (Spark, Feast, MLflow) and .venv-airflow: own hash-pinned locks (tools/*/requirements.lock);
#    each lock's hash is stamped into its venv, so a changed lock reinstalls.
pipeline_apt=(openjdk-17-jre-headless maven libpostgresql-jdbc-java prometheus-alertmanager)
pipeline_missing=()
for p in "${pipeline_apt[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || pipeline_missing+=("$p")
done
if [ "${#pipeline_missing[@]}" -gt 0 ]; then
  log "apt-get install ${pipeline_missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pipeline_missing[@]}" >/dev/null
fi
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tools/kafka/pom.xml)
kafka_cache="${CLINOPS_CACHE_DIR:-/var/cache/clinops}/kafka/$kafka_version"
if ! [ -f "$kafka_cache/libs/kafka_2.13-$kafka_version.jar" ]; then
  log "Kafka $kafka_version broker jars from Maven Central into $kafka_cache"
  $SUDO mkdir -p "$kafka_cache"
  rm -rf "$kafka_cache/libs.partial"
  mvn -B -q -f tools/kafka/pom.xml -Dmaven.repo.local="${CLINOPS_CACHE_DIR:-/var/cache/clinops}/maven" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$kafka_cache/libs.partial"
  mv "$kafka_cache/libs.partial" "$kafka_cache/libs"
fi
#    Kafka Connect (the worker, at the broker's version) and Debezium's PostgreSQL connector (a plugin
#    directory of its own), same route: tools/kafka-connect/pom.xml, one profile each.
connect_pom=tools/kafka-connect/pom.xml
connect_kafka=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$connect_pom")
debezium_version=$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$connect_pom")
connect_cache="${CLINOPS_CACHE_DIR:-/var/cache/clinops}/kafka-connect/$connect_kafka-debezium-$debezium_version"
for part in runtime:libs/connect-runtime-$connect_kafka.jar \
            debezium-postgres:plugins/debezium-connector-postgres/debezium-connector-postgres-$debezium_version.jar; do
  profile=${part%%:*} sentinel=${part#*:} exclude=none
  # slf4j and Jackson stay the worker's (same versions): Connect shares slf4j with every plugin, and
  # Debezium's converters call the worker's JsonConverter with Jackson types, which must be the same classes
  [ "$profile" = runtime ] || exclude=slf4j-api,jackson-core,jackson-databind,jackson-annotations
  dest=$(dirname "$connect_cache/$sentinel")
  if ! [ -f "$connect_cache/$sentinel" ]; then
    log "Kafka Connect $connect_kafka / Debezium $debezium_version ($profile) from Maven Central into $dest"
    $SUDO mkdir -p "$(dirname "$dest")"
    rm -rf "$dest.partial"
    mvn -B -q -f "$connect_pom" -P "$profile" -Dmaven.repo.local="${CLINOPS_CACHE_DIR:-/var/cache/clinops}/maven" \
      dependency:copy-dependencies -DincludeScope=runtime -DexcludeArtifactIds="$exclude" \
      -DoutputDirectory="$dest.partial"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
  fi
done
for env in pipeline airflow; do
  lock="tools/$env/requirements.lock"
  lock_sum=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ "$(cat ".venv-$env/.lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
    log "$env into .venv-$env (from $lock)"
    rm -rf ".venv-$env"
    "$UV" venv -q --python "$(.venv/bin/python -c 'import sys; print(sys.executable)')" ".venv-$env"
    VIRTUAL_ENV=".venv-$env" "$UV" pip sync -q --compile-bytecode --require-hashes "$lock"
    echo "$lock_sum" > ".venv-$env/.lock-sha256"
  fi
done

# 4. The project's own Jupyter kernel, so papermill and JupyterLab run the runbooks on this venv.
.venv/bin/python -m ipykernel install --sys-prefix --name clinops --display-name "clinops (Python 3.11)" >/dev/null
log "ready: .venv/bin/clinops --help"
