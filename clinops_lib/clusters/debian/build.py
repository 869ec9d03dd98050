"""Building the cluster's binaries once, from source, into a cache outside the checkout.

Nothing here is downloaded as a binary. Three builds, each a straight pipeline of named steps
(every step idempotent: it checks its own result first, so a second run does nothing and an
interrupted run resumes at the step that was cut off):

* **Kubernetes v1.20.2** from Debian bookworm's ``kubernetes`` *source* package (the complete
  upstream tree with ``vendor/``), built with Debian's Go 1.19 first on ``PATH``,
  ``GOPROXY=off`` and Kubernetes' own ``make`` (plain ``go build`` fails: ``make`` generates
  the openapi code). The vendored ``modern-go/reflect2`` 1.0.1 predates the Go 1.18 runtime and
  is replaced by Debian's copy (1.0.2), and one line of the two vendored openapi validators
  (kube-openapi's fork, which custom resources go through, and go-openapi's) is fixed
  (``SOURCE_FIXES``: under Go >= 1.19 they took "" in custom resources for null). The pause binary is
  compiled from the same tree (``build/pause/linux/pause.c``, ``gcc -static``).
* **The Argo Rollouts controller v1.8.3** from its Go module source (``go mod download`` through
  the Go module proxy, then ``go build ./cmd/rollouts-controller`` inside a *copy* of the module
  folder so the module's own ``replace`` directives apply), with the newest Go on the machine.
  Its CRDs and ClusterRole are read from the same source folder at install time, so the
  manifests always match the binary.
* **Prometheus v3.16.0** (``prometheus`` and ``promtool``) the same way from its Go module
  (``github.com/prometheus/prometheus@v0.316.0``: upstream tags v3.x as module versions
  v0.3xx), with upstream's build tags ``remove_all_sd,enable_kubernetes_sd``: the host's
  Prometheus needs ``kubernetes_sd_configs`` for the cluster's pods, which Debian's 2.42 lacks.
  The web UI's assets are not embedded (no ``builtinassets``): the HTTP API is complete.

Both module builds are one function, :func:`build_go_module`, given a :class:`GoModuleBuild`
(module, version, binaries and their packages, ldflags, tags, whether the source is kept).

The cache (``/var/cache/clinops/<thing>/<version>/``) holds the binaries and a ``build.json``
with their SHA-256; the source trees are removed after a successful build (3.4 GB for
Kubernetes) unless ``keep_tree``. Each build writes one log file; a failing step raises
:class:`BuildError` naming the step and that log. Long steps report progress every
``heartbeat`` seconds (elapsed time and the log's last line).

The Debian packages (compilers, ``deb-src`` line) are installed by ``scripts/setup-cluster.sh``;
:func:`missing_build_prerequisites` names what is absent before anything starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...config import child_environment
from ...exceptions import BuildError, PrerequisiteError

__all__ = [
    "ARGO_ROLLOUTS_MODULE",
    "BUILD_NICENESS",
    "ARGO_ROLLOUTS_VERSION",
    "DEBIAN_SOURCE_VERSION",
    "KUBERNETES_BINARIES",
    "KUBERNETES_VERSION",
    "PROMETHEUS",
    "PROMETHEUS_VERSION",
    "ROLLOUTS_CONTROLLER",
    "BuildCache",
    "GoModuleBuild",
    "argocd_crds",
    "download_module",
    "BuildResult",
    "build_all",
    "build_go_module",
    "build_kubernetes",
    "build_prometheus",
    "build_rollouts_controller",
    "lower_priority",
    "missing_build_prerequisites",
    "prepare_tree",
]

KUBERNETES_VERSION = "v1.20.2"
#: bookworm's ``kubernetes`` source package: upstream v1.20.2 despite the 1.20.5 in its name.
DEBIAN_SOURCE_VERSION = "1.20.5+really1.20.2-1.1+deb12u1"
KUBERNETES_COMMIT = "faecb196815e248d3ecfb03c680a4507229c2a56"
KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
DEBIAN_GO = Path("/usr/lib/go-1.19/bin")
DEBIAN_REFLECT2 = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
#: Debian's copies that replace vendored modules which break under Go 1.19 (vendor path, source).
VENDOR_REPLACEMENTS = {
    "github.com/modern-go/reflect2": (
        DEBIAN_REFLECT2,
        "golang-github-modern-go-reflect2-dev",
        "go_above_118.go",
    ),
}
#: One-line source fixes for behaviour that changed with the Go release (file, old, new).
#: go-openapi/validate 0.19 treats a value equal to its type's reflect.Zero as null; up to Go 1.18
#: that DeepEqual of two reflect.Values was false for every decoded value, since Go 1.19 it is true
#: for "" decoded from JSON, so the API server rejected every custom resource holding an empty
#: string (an AnalysisRun's status.phase "", an AppProject's group ""). Only nil is null again,
#: as in the binaries Kubernetes released (built with Go 1.15).
#: The custom-resource validation of 1.20's apiextensions-apiserver uses kube-openapi's fork of
#: the package (``k8s.io/kube-openapi/pkg/validation/validate``), which has the same line: recipe 3
#: fixed only the go-openapi copy and the API server still rejected "" (recipe 4 fixes both).
_ZERO_IS_NULL = (
    "if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {"
)
_ONLY_NIL_IS_NULL = 'if data == nil { // clinops: Go >= 1.19 made the zero-value check match decoded ""'
SOURCE_FIXES = (
    ("vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go", _ZERO_IS_NULL, _ONLY_NIL_IS_NULL),
    ("vendor/github.com/go-openapi/validate/type.go", _ZERO_IS_NULL, _ONLY_NIL_IS_NULL),
)
#: Bumped when the way the binaries are made changes: a cache built another way is rebuilt.
KUBERNETES_RECIPE = 4
ARGO_ROLLOUTS_MODULE = "github.com/argoproj/argo-rollouts"
ARGO_ROLLOUTS_VERSION = "v1.8.3"
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
#: Prometheus v3.16.0: its Go module numbers releases v0.<major*100+minor>.<patch> (go.mod: go 1.26.7).
PROMETHEUS_MODULE_VERSION = "v0.316.0"
PROMETHEUS_VERSION = "v3.16.0"
ARGOCD_MODULE = "github.com/argoproj/argo-cd/v2"
ARGOCD_VERSION = "v2.13.2"
#: Go release the Argo Rollouts module needs at least (its go.mod says ``go 1.23.4``).
MIN_MODULE_GO = (1, 23)
DEFAULT_CACHE_ROOT = Path("/var/cache/clinops")
SETUP_HINT = "install the build packages with `bash scripts/setup-cluster.sh`"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class GoModuleBuild:
    """A program built from a Go module's source: what, from which module version, how.

    ``binaries`` maps each binary's name to its package inside the module. ``keep_source``
    keeps the copied module folder next to the binaries (the Rollouts controller's CRDs and
    RBAC are read from it); otherwise it is removed once the binaries exist. ``recipe`` is
    bumped when the way of building changes, so a cache built another way is rebuilt.
    """

    what: str
    version: str
    module: str
    module_version: str
    binaries: Mapping[str, str]
    ldflags: str = "-s -w"
    tags: tuple[str, ...] = ()
    keep_source: bool = False
    recipe: int = 1
    #: the Go release the module's go.mod asks for at least (major, minor)
    min_go: tuple[int, int] = MIN_MODULE_GO


#: The Argo Rollouts controller (issue 13, point 4).
ROLLOUTS_CONTROLLER = GoModuleBuild(
    what="argo-rollouts",
    version=ARGO_ROLLOUTS_VERSION,
    module=ARGO_ROLLOUTS_MODULE,
    module_version=ARGO_ROLLOUTS_VERSION,
    binaries={"rollouts-controller": "./cmd/rollouts-controller"},
    ldflags="-s -w -X github.com/argoproj/argo-rollouts/utils/version.version="
    + ARGO_ROLLOUTS_VERSION.removeprefix("v"),
    keep_source=True,
)
_PROMETHEUS_VERSION_PKG = "github.com/prometheus/common/version"
#: Prometheus with ``kubernetes_sd_configs`` (Debian's 2.42 is built without it; issue 13, point 5).
#: Upstream's own build tags choose the service discoveries: ``remove_all_sd`` drops the cloud
#: ones (AWS, Azure, GCE, ... and their SDKs: most of the compile time), ``enable_kubernetes_sd``
#: keeps Kubernetes; file, http and static discovery are always in. ``netgo`` as upstream builds.
#: Without ``builtinassets`` the web UI's files are not embedded: the UI pages are absent, the
#: HTTP API (``/api/v1/*``, ``/-/ready``, ``/-/reload``) is all there.
PROMETHEUS = GoModuleBuild(
    what="prometheus",
    version=PROMETHEUS_VERSION,
    module=PROMETHEUS_MODULE,
    module_version=PROMETHEUS_MODULE_VERSION,
    binaries={"prometheus": "./cmd/prometheus", "promtool": "./cmd/promtool"},
    ldflags=(
        f"-s -w -X {_PROMETHEUS_VERSION_PKG}.Version={PROMETHEUS_VERSION.removeprefix('v')}"
        f" -X {_PROMETHEUS_VERSION_PKG}.Revision=module-{PROMETHEUS_MODULE_VERSION}"
        f" -X {_PROMETHEUS_VERSION_PKG}.Branch=module"
    ),
    tags=("netgo", "remove_all_sd", "enable_kubernetes_sd"),
    min_go=(1, 26),  # its go.mod: go 1.26.7
)


@dataclass(frozen=True)
class BuildCache:
    """Where builds and their results live (outside the checkout; survives fresh clones)."""

    root: Path = DEFAULT_CACHE_ROOT

    @property
    def kubernetes(self) -> Path:
        return self.root / "kubernetes" / KUBERNETES_VERSION

    @property
    def kubernetes_bin(self) -> Path:
        return self.kubernetes / "bin"

    @property
    def kubernetes_log(self) -> Path:
        return self.kubernetes / "build.log"

    @property
    def kubernetes_src(self) -> Path:
        return self.kubernetes / "build"

    @property
    def kubernetes_tree(self) -> Path:
        return self.kubernetes_src / "kubernetes-1.20.2"

    def module_folder(self, build: GoModuleBuild) -> Path:
        """``<root>/<what>/<version>/``: the binaries, ``build.json``, ``build.log`` (and ``src``)."""
        return self.root / build.what / build.version

    def module_binary(self, build: GoModuleBuild, name: str) -> Path:
        return self.module_folder(build) / name

    def module_source(self, build: GoModuleBuild) -> Path:
        return self.module_folder(build) / "src"

    def module_log(self, build: GoModuleBuild) -> Path:
        return self.module_folder(build) / "build.log"

    def module_ready(self, build: GoModuleBuild) -> bool:
        folder = self.module_folder(build)
        return (
            _manifest_ok(folder, list(build.binaries), ".")
            and _recipe(folder) == build.recipe
            and (not build.keep_source or (self.module_source(build) / "go.mod").is_file())
        )

    @property
    def rollouts(self) -> Path:
        return self.module_folder(ROLLOUTS_CONTROLLER)

    @property
    def rollouts_controller(self) -> Path:
        return self.module_binary(ROLLOUTS_CONTROLLER, "rollouts-controller")

    @property
    def rollouts_source(self) -> Path:
        """The module's source (kept: the CRDs and RBAC are read from ``manifests/``)."""
        return self.module_source(ROLLOUTS_CONTROLLER)

    @property
    def rollouts_log(self) -> Path:
        return self.module_log(ROLLOUTS_CONTROLLER)

    @property
    def prometheus(self) -> Path:
        return self.module_binary(PROMETHEUS, "prometheus")

    @property
    def promtool(self) -> Path:
        return self.module_binary(PROMETHEUS, "promtool")

    @property
    def go_modules(self) -> Path:
        return self.root / "go" / "mod"

    @property
    def go_build_cache(self) -> Path:
        return self.root / "go" / "build-cache"

    def kubernetes_binary(self, name: str) -> Path:
        return self.kubernetes_bin / name

    @property
    def pause_binary(self) -> Path:
        return self.kubernetes_bin / "pause"

    def kubernetes_ready(self) -> bool:
        return (
            _manifest_ok(self.kubernetes, [*KUBERNETES_BINARIES, "pause"], "bin")
            and _recipe(self.kubernetes) == KUBERNETES_RECIPE
        )

    def rollouts_ready(self) -> bool:
        return (
            self.module_ready(ROLLOUTS_CONTROLLER) and (self.rollouts_source / "manifests" / "crds").is_dir()
        )

    def prometheus_ready(self) -> bool:
        return self.module_ready(PROMETHEUS)


@dataclass(frozen=True)
class BuildResult:
    """What a build produced and how long it took (0 when everything came from the cache)."""

    what: str
    version: str
    seconds: float
    cached: bool
    binaries: dict[str, str]  # name -> sha256
    log_file: str


# -- helpers -------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_ok(folder: Path, names: Sequence[str], sub: str) -> bool:
    """The build record exists and every binary it names is present with that size."""
    try:
        record = json.loads((folder / "build.json").read_text())
        sizes = record["sizes"]
        return all(
            (folder / sub / n).is_file() and (folder / sub / n).stat().st_size == sizes[n] for n in names
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _recipe(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "build.json").read_text()).get("recipe", 1))
    except (OSError, ValueError, TypeError):
        return None


def _write_manifest(
    folder: Path, binaries: Mapping[str, Path], extra: Mapping[str, object]
) -> dict[str, str]:
    digests = {n: _sha256(p) for n, p in binaries.items()}
    record = {
        **extra,
        "sha256": digests,
        "sizes": {n: p.stat().st_size for n, p in binaries.items()},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = folder / "build.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(folder / "build.json")
    return digests


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1][:160] if lines else ""
    except OSError:
        return ""


#: A build is background work: it runs beside the test suite (scripts/test.sh starts the cluster
#: tier's build while the other tests run) or an operator's platform, whose drills measure latency.
#: At this niceness the compilers take what the services leave; the measurement stays the services'.
BUILD_NICENESS = 10


def lower_priority() -> None:
    """In the child, before exec: lower its CPU priority (inherited by make, go, compile, link)."""
    os.nice(BUILD_NICENESS)


def _run_step(
    step: str,
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float,
    progress: Progress,
    heartbeat: float = 30.0,
) -> None:
    """Run one build command with its output appended to ``log``.

    The child gets its own process group so an interrupt (Ctrl-C, SIGTERM of the caller, a
    timeout) stops the whole build (make spawns go, go spawns compile/link) and not only make.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "ab") as out:
        out.write(
            f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} step {step}: "
            f"{' '.join(argv)}\n".encode()
        )
        out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=lower_priority,
            )
        except OSError as e:
            raise BuildError(step, f"could not start {argv[0]}: {e}", str(log)) from e
        next_beat = t0 + heartbeat
        try:
            while True:
                try:
                    code = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if now - t0 > timeout:
                        raise BuildError(step, f"did not finish within {timeout:g}s", str(log)) from None
                    if now >= next_beat:
                        progress(f"{step}: {now - t0:.0f}s ... {_last_line(log)}")
                        next_beat = now + heartbeat
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise
    if code != 0:
        raise BuildError(step, f"exited with status {code}; last line: {_last_line(log)!r}", str(log))


def _go_version(go: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.strip().removeprefix("go").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def module_go(
    which: Callable[[str], str | None] = shutil.which, minimum: tuple[int, int] = MIN_MODULE_GO
) -> str | None:
    """The newest usable Go for module builds: /usr/local/go first, then PATH (never Debian's 1.19)."""
    for candidate in ("/usr/local/go/bin/go", which("go")):
        if candidate and os.access(candidate, os.X_OK):
            version = _go_version(candidate)
            if version is not None and version >= minimum:
                return candidate
    return None


def missing_build_prerequisites(*, rollouts: bool = True) -> list[str]:
    """Everything absent that a cold build needs (empty when the build can start)."""
    missing = []
    if not (DEBIAN_GO / "go").is_file():
        missing.append(f"Debian's Go 1.19 ({DEBIAN_GO}/go, package golang-go)")
    for source, package, _ in VENDOR_REPLACEMENTS.values():
        if not source.is_dir():
            missing.append(f"{source} (package {package})")
    for tool, package in (
        ("make", "make"),
        ("rsync", "rsync"),
        ("gcc", "gcc"),
        ("apt-get", "apt"),
        ("tar", "tar"),
    ):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` (package {package})")
    if not Path("/usr/include/stdio.h").is_file():
        missing.append("C headers (package libc6-dev)")
    if rollouts and module_go() is None:
        missing.append("a Go >= 1.23 for the Argo Rollouts module (/usr/local/go or on PATH)")
    return missing


def _require(missing: list[str]) -> None:
    if missing:
        raise PrerequisiteError(
            "cannot build the cluster's binaries, missing: " + "; ".join(missing) + f" ({SETUP_HINT})"
        )


# -- Kubernetes ------------------------------------------------------------------------------
def _vendor_replaced(tree: Path) -> bool:
    """Every replacement and source fix is in place (each Debian copy has a file the vendored
    one lacks; each fixed file holds its new line)."""
    for module, (_, _, marker) in VENDOR_REPLACEMENTS.items():
        vendored = tree / "vendor" / module
        if not (vendored / marker).is_file() or (vendored / "go.mod").exists():
            return False
    for rel, _, after in SOURCE_FIXES:
        path = tree / rel
        if not path.is_file() or after not in path.read_text():
            return False
    return True


def prepare_tree(
    tree: Path,
    log: Path,
    *,
    replacements: Mapping[str, tuple[Path, str, str]] = VENDOR_REPLACEMENTS,
    fixes: Sequence[tuple[str, str, str]] = SOURCE_FIXES,
) -> None:
    """Vendor replacements and source fixes, in place and each checked on its own: a tree kept
    from an interrupted build (with make's ``_output/`` and its Go cache) only recompiles what a
    new fix touches. A fix whose line is not found exactly once fails, naming the file."""
    for module, (source, _, marker) in replacements.items():
        vendored = tree / "vendor" / module
        if not (vendored / marker).is_file() or (vendored / "go.mod").exists():
            shutil.rmtree(vendored, ignore_errors=True)
            shutil.copytree(source, vendored, ignore=shutil.ignore_patterns("*_test.go", "go.mod", "go.sum"))
    for rel, before, after in fixes:
        path = tree / rel
        text = path.read_text()
        if after in text:
            continue
        if text.count(before) != 1:
            raise BuildError("patch source", f"{rel}: expected line not found once: {before!r}", str(log))
        path.write_text(text.replace(before, after))


def _kubernetes_env(cache: BuildCache) -> dict[str, str]:
    home = cache.kubernetes_src / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{DEBIAN_GO}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "GOPATH": str(cache.kubernetes_src / "gopath"),
        "GOCACHE": str(cache.kubernetes_src / "gocache"),  # make forces _output/local/go/cache anyway
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "LANG": "C.UTF-8",
        "KUBE_GIT_VERSION": KUBERNETES_VERSION,
        "KUBE_GIT_MAJOR": "1",
        "KUBE_GIT_MINOR": "20",
        "KUBE_GIT_TREE_STATE": "clean",
        "KUBE_GIT_COMMIT": KUBERNETES_COMMIT,
    }


def build_kubernetes(
    cache: BuildCache | None = None,
    *,
    progress: Progress = _quiet,
    keep_tree: bool = False,
    timeout: float = 7200.0,
) -> BuildResult:
    """The five Kubernetes binaries and the pause binary, built once into ``cache``."""
    cache = cache or BuildCache()
    log = cache.kubernetes_log
    if cache.kubernetes_ready():
        record = json.loads((cache.kubernetes / "build.json").read_text())
        return BuildResult("kubernetes", KUBERNETES_VERSION, 0.0, True, record["sha256"], str(log))
    _require(missing_build_prerequisites(rollouts=False))
    t0 = time.monotonic()
    cache.kubernetes_src.mkdir(parents=True, exist_ok=True)
    tree = cache.kubernetes_tree
    orig = cache.kubernetes_src / "kubernetes_1.20.5+really1.20.2.orig.tar.gz"
    if not orig.is_file():
        progress(f"kubernetes: fetching Debian source package kubernetes={DEBIAN_SOURCE_VERSION}")
        try:
            _run_step(
                "fetch Debian source package (apt-get source)",
                ["apt-get", "source", "--download-only", f"kubernetes={DEBIAN_SOURCE_VERSION}"],
                log,
                cwd=cache.kubernetes_src,
                timeout=900,
                progress=progress,
            )
        except BuildError as e:
            raise BuildError(
                e.step, f"{e.detail} (is a deb-src line for bookworm configured? {SETUP_HINT})", str(log)
            ) from e
    if not (tree / "Makefile").is_file():
        progress("kubernetes: unpacking the source tree")
        if tree.exists():
            shutil.rmtree(tree)
        _run_step(
            "unpack source",
            ["tar", "xzf", str(orig)],
            log,
            cwd=cache.kubernetes_src,
            timeout=900,
            progress=progress,
        )
    if not _vendor_replaced(tree):
        # in place, each step checked on its own: a tree kept from an interrupted build (with
        # make's _output/ and its Go cache) only recompiles what a new fix touches
        progress("kubernetes: replacing vendored reflect2, fixing the openapi validators' zero-value check")
        prepare_tree(tree, log)
    progress("kubernetes: make (about 10 min on 2 free cores; log: " + str(log) + ")")
    targets = " ".join(f"cmd/{b}" for b in KUBERNETES_BINARIES)
    _run_step(
        "make kubernetes binaries",
        ["make", f"WHAT={targets}", "GOLDFLAGS=-s -w"],
        log,
        env=_kubernetes_env(cache),
        cwd=tree,
        timeout=timeout,
        progress=progress,
    )
    staging = cache.kubernetes / "bin.new"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for b in KUBERNETES_BINARIES:
        shutil.copy2(tree / "_output" / "bin" / b, staging / b)
    progress("kubernetes: compiling pause from build/pause/linux/pause.c")
    _run_step(
        "compile pause",
        [
            "gcc",
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            "-DVERSION=v3.4.1",
            "-o",
            str(staging / "pause"),
            str(tree / "build" / "pause" / "linux" / "pause.c"),
        ],
        log,
        timeout=300,
        progress=progress,
    )
    _run_step("strip pause", ["strip", str(staging / "pause")], log, timeout=60, progress=progress)
    if cache.kubernetes_bin.exists():
        shutil.rmtree(cache.kubernetes_bin)
    staging.replace(cache.kubernetes_bin)
    seconds = time.monotonic() - t0
    digests = _write_manifest(
        cache.kubernetes,
        {n: cache.kubernetes_bin / n for n in (*KUBERNETES_BINARIES, "pause")},
        {
            "version": KUBERNETES_VERSION,
            "recipe": KUBERNETES_RECIPE,
            "source": f"Debian source package kubernetes={DEBIAN_SOURCE_VERSION}",
            "go": "Debian golang-go 1.19, GOPROXY=off",
            "build_seconds": round(seconds, 1),
        },
    )
    if not keep_tree:
        shutil.rmtree(tree, ignore_errors=True)
        for sub in ("gopath", "gocache"):
            shutil.rmtree(cache.kubernetes_src / sub, ignore_errors=True)
    progress(f"kubernetes: built in {seconds:.0f}s -> {cache.kubernetes_bin}")
    return BuildResult("kubernetes", KUBERNETES_VERSION, seconds, False, digests, str(log))


# -- Argo Rollouts ---------------------------------------------------------------------------
def _go_env(cache: BuildCache, go: str) -> dict[str, str]:
    return {
        "PATH": f"{Path(go).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": child_environment().get("HOME", "/root"),
        "GOMODCACHE": str(cache.go_modules),
        "GOPATH": str(cache.root / "go" / "path"),
        "GOCACHE": str(cache.go_build_cache),
        "GOFLAGS": "-mod=mod",
        # the module's own go.mod and go.sum decide (Prometheus ships a go.work for its
        # developers' tools, which would forbid -mod=mod)
        "GOWORK": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOPROXY": child_environment().get("GOPROXY") or "https://proxy.golang.org",
        "LANG": "C.UTF-8",
    }


def download_module(cache: BuildCache, go: str, module: str, version: str, log: Path) -> Path:
    """``go mod download`` one module through the Go module proxy; returns its (read-only) folder."""
    ref = f"{module}@{version}"
    cache.root.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            [go, "mod", "download", "-json", ref],
            capture_output=True,
            env=_go_env(cache, go),
            cwd=cache.root,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise BuildError("go mod download", f"{ref} did not finish within 900s", str(log)) from e
    with open(log, "ab") as f:
        f.write(f"\n=== go mod download -json {ref}\n".encode() + proc.stdout + proc.stderr)
    try:
        info = json.loads(proc.stdout or b"{}")
    except ValueError:
        info = {}
    if proc.returncode != 0 or not info.get("Dir"):
        reason = info.get("Error") or proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise BuildError("go mod download", f"{ref} failed: {reason}", str(log))
    return Path(info["Dir"])


def argocd_crds(cache: BuildCache | None = None) -> list[Path]:
    """Argo CD's CRDs (Application, AppProject, ApplicationSet) from its module source, at the
    version the stack pins (``kind/stack-versions.yaml``: chart 7.7.11 = app v2.13.2)."""
    cache = cache or BuildCache()
    go = module_go()
    if go is None:
        _require(["a Go >= 1.23 to fetch the Argo CD module (/usr/local/go or on PATH)"])
    assert go is not None
    folder = download_module(cache, go, ARGOCD_MODULE, ARGOCD_VERSION, cache.root / "go" / "download.log")
    crds = sorted((folder / "manifests" / "crds").glob("*-crd.yaml"))
    if not crds:
        raise BuildError("argo-cd CRDs", f"no manifests/crds/*-crd.yaml in {folder}", None)
    return crds


def build_go_module(
    build: GoModuleBuild,
    cache: BuildCache | None = None,
    *,
    progress: Progress = _quiet,
    timeout: float = 3600.0,
) -> BuildResult:
    """Build ``build``'s binaries from its module source (Go module proxy), once.

    ``go mod download`` gives the module's folder (read-only, in the shared module cache); the
    build runs inside a writable *copy* of it so the module's own ``replace`` directives and
    ``go.sum`` apply. Each binary is written next to ``build.json`` (sizes, SHA-256, seconds).
    """
    cache = cache or BuildCache()
    folder = cache.module_folder(build)
    log = cache.module_log(build)
    if cache.module_ready(build):
        record = json.loads((folder / "build.json").read_text())
        return BuildResult(build.what, build.version, 0.0, True, record["sha256"], str(log))
    go = module_go(minimum=build.min_go)
    if go is None:
        wanted = ".".join(map(str, build.min_go))
        _require([f"a Go >= {wanted} for the {build.what} module (/usr/local/go or on PATH)"])
    assert go is not None
    t0 = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    env = _go_env(cache, go)
    source = cache.module_source(build)
    module = f"{build.module}@{build.module_version}"
    if not (source / "go.mod").is_file() or not (source / ".clinops-copied").is_file():
        progress(f"{build.what}: go mod download {module}")
        downloaded = download_module(cache, go, build.module, build.module_version, log)
        if source.exists():
            shutil.rmtree(source)
        shutil.copytree(downloaded, source)
        for d, _, files in os.walk(source):  # the module cache is read-only; the copy must not be
            os.chmod(d, os.stat(d).st_mode | 0o200)
            for name in files:
                path = os.path.join(d, name)
                os.chmod(path, os.stat(path).st_mode | 0o200)
        (source / ".clinops-copied").write_text(module + "\n")
    built: dict[str, Path] = {}
    for name, package in build.binaries.items():
        progress(f"{build.what}: go build {package} (log: {log})")
        tmp = folder / f"{name}.new"
        argv = [go, "build", "-trimpath", "-ldflags", build.ldflags]
        if build.tags:
            argv += ["-tags", ",".join(build.tags)]
        _run_step(
            f"go build {name}",
            [*argv, "-o", str(tmp), package],
            log,
            env=env,
            cwd=source,
            timeout=timeout,
            progress=progress,
        )
        tmp.replace(cache.module_binary(build, name))
        built[name] = cache.module_binary(build, name)
    seconds = time.monotonic() - t0
    digests = _write_manifest(
        folder,
        built,
        {
            "version": build.version,
            "module": build.module,
            "module_version": build.module_version,
            "tags": list(build.tags),
            "recipe": build.recipe,
            "go": env["PATH"].split(":")[0],
            "build_seconds": round(seconds, 1),
        },
    )
    if not build.keep_source:
        shutil.rmtree(source, ignore_errors=True)
    progress(f"{build.what}: built in {seconds:.0f}s -> {folder}")
    return BuildResult(build.what, build.version, seconds, False, digests, str(log))


def build_rollouts_controller(
    cache: BuildCache | None = None, *, progress: Progress = _quiet, timeout: float = 3600.0
) -> BuildResult:
    """``rollouts-controller`` v1.8.3 from its module source (Go module proxy), built once."""
    return build_go_module(ROLLOUTS_CONTROLLER, cache, progress=progress, timeout=timeout)


def build_prometheus(
    cache: BuildCache | None = None, *, progress: Progress = _quiet, timeout: float = 3600.0
) -> BuildResult:
    """``prometheus`` and ``promtool`` with Kubernetes service discovery, from the module source."""
    return build_go_module(PROMETHEUS, cache, progress=progress, timeout=timeout)


def build_all(
    cache: BuildCache | None = None,
    *,
    progress: Progress = _quiet,
    rollouts: bool = True,
    prometheus: bool = False,
) -> list[BuildResult]:
    """Everything the cluster needs, each from the cache when already built.

    ``prometheus``: also the host's Prometheus with Kubernetes discovery (``clinops cluster
    build`` builds it; ``create`` does not need it).
    """
    cache = cache or BuildCache()
    _require(missing_build_prerequisites(rollouts=rollouts))
    results = [build_kubernetes(cache, progress=progress)]
    if rollouts:
        results.append(build_rollouts_controller(cache, progress=progress))
    if prometheus:
        results.append(build_prometheus(cache, progress=progress))
    return results
