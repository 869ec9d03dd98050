"""The project's images without Docker or a registry: buildah on a base made from Debian packages.

Route (the local stand-in for the pipeline's Kaniko step):

1. **Base image** made locally: ``debootstrap --variant=minbase`` of Debian bookworm with
   ``python3`` (3.11), ``python3-venv``, ``python-is-python3`` and ``ca-certificates`` into an
   empty buildah container, committed in a *private* buildah store (under
   ``/var/cache/clinops/buildah/<driver>/``) under the name the Dockerfiles' ``FROM`` pins
   (``docker.io/library/python:3.11.10-slim-bookworm``). That name is a stand-in: no registry is
   reachable, so the upstream image cannot be pulled. The stand-in carries labels that say so
   (``org.clinops.base.stands-in-for``, ``org.clinops.base.made-from``), lives only in that
   private store, and builds run with ``--pull=never`` so nothing can mistake it for the
   upstream image. The Python inside is Debian's 3.11.2, not 3.11.10.
2. **The repository's own Dockerfiles, unchanged** (``services/*/Dockerfile``, context = the
   repository root filtered by ``.dockerignore``): ``buildah build --isolation chroot --layers``;
   the build stage's ``pip install --require-hashes`` reaches PyPI as usual (with this machine's
   CA bundle bind-mounted into the RUN steps only: the egress here may inspect TLS). The three
   Dockerfiles share that stage (same base, same ``services/requirements.txt``), so with
   ``--layers`` pip runs once and the other two images reuse its layer.
3. The result is written as a ``docker-archive`` under ``/var/cache/clinops/images/`` and
   imported into containerd's ``k8s.io`` namespace with the reference the charts pin
   (``<global.imageRegistry>/<repository>:<tag>``), so pods run it with no pull.

Storage driver: buildah's **overlay** driver (the kernel's overlayfs: a step's layer is the
diff of its upper directory) whenever the kernel lets this process mount overlayfs on the
store's filesystem, which :func:`overlay_mount_problem` checks by doing it once; otherwise
**vfs**, with the reason in the progress line and the build log (vfs copies the whole root
filesystem for every step and every container: each service image took 6-12 min at load ~20-30,
against well under a minute with overlay; ``benchmarks/results/images.json`` has both, measured).
Each driver has its own store (a store made by one cannot be opened by the other).

Caching: the base is keyed by the hash of its recipe (suite, packages, mirror); each service
image by the hash of its Dockerfile, every file of its build context and the base key. An
unchanged input set is never rebuilt (and then no buildah command runs at all); any change to
the code copied into the image is. The storage driver is not part of the key: it changes how
the layers are stored while building, not what the image contains.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...catalog import built_images
from ...config import child_environment
from ...exceptions import BuildError, PrerequisiteError
from .build import lower_priority

__all__ = [
    "BASE_PACKAGES",
    "SERVICE_REPOSITORIES",
    "STORAGE_DRIVERS",
    "BuiltImage",
    "ImageBuilder",
    "StorageChoice",
    "choose_storage_driver",
    "overlay_mount_problem",
]

BASE_STANDS_IN_FOR = "docker.io/library/python:3.11.10-slim-bookworm"
BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
#: services/<folder>/Dockerfile -> the image repository the charts name for it (the catalog's fact).
SERVICE_REPOSITORIES = built_images()
Progress = Callable[[str], None]


#: buildah storage drivers in order of preference: overlay (the kernel's overlayfs; a layer is
#: the diff of one step) and vfs (every step and every container a full copy of the rootfs).
STORAGE_DRIVERS = ("overlay", "vfs")


def _quiet(_: str) -> None:
    return None


def overlay_mount_problem(scratch: Path) -> str | None:
    """Why the kernel refuses an overlay mount here as this user, or None if it allows one.

    The probe is what buildah's overlay driver will do: mount an overlay of a lower, an upper
    and a work directory under ``scratch`` (on the filesystem that will hold the store, since
    overlayfs does not accept every upper filesystem), write through it, unmount.
    """
    if os.geteuid() != 0:
        return "not root (buildah's native overlay driver mounts overlayfs)"
    scratch.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="overlay-probe-", dir=scratch))
    try:
        for d in ("lower", "upper", "work", "merged"):
            (probe / d).mkdir()
        (probe / "lower" / "f").write_text("lower\n")
        opts = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
        try:
            mounted = subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", opts, str(probe / "merged")],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"mount -t overlay could not run: {e}"
        if mounted.returncode != 0:
            return f"mount -t overlay failed: {(mounted.stderr or mounted.stdout).strip()[-200:]}"
        try:
            (probe / "merged" / "g").write_text("upper\n")
            if (probe / "merged" / "f").read_text() != "lower\n" or not (probe / "upper" / "g").is_file():
                return "an overlay mount did not show its lower layer or did not write to its upper one"
        finally:
            subprocess.run(["umount", str(probe / "merged")], capture_output=True, timeout=30, check=False)
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@dataclass(frozen=True)
class StorageChoice:
    """The buildah storage driver used, and why (said in the progress line and the log)."""

    driver: str
    reason: str


def choose_storage_driver(
    scratch: Path,
    *,
    requested: str | None = None,
    probe: Callable[[Path], str | None] = overlay_mount_problem,
) -> StorageChoice:
    """overlay when the kernel mounts overlayfs here, vfs otherwise (or what ``requested`` names).

    vfs copies the whole root filesystem for every build step and every container, which made
    each service image take 6-12 minutes on this kind of machine; overlay stores one diff per
    step. A request for overlay that the kernel refuses is an error, not a silent fallback.
    """
    if requested is not None and requested not in STORAGE_DRIVERS:
        raise PrerequisiteError(
            f"unknown buildah storage driver {requested!r}; known: {', '.join(STORAGE_DRIVERS)}"
        )
    if requested == "vfs":
        return StorageChoice("vfs", "vfs requested")
    problem = probe(scratch)
    if problem is None:
        return StorageChoice("overlay", "the kernel mounts overlayfs here")
    if requested == "overlay":
        raise PrerequisiteError(f"buildah storage driver overlay requested, but {problem}")
    return StorageChoice(
        "vfs",
        f"falling back to buildah's vfs driver (every layer a full copy, several times slower): {problem}",
    )


@dataclass(frozen=True)
class BuiltImage:
    service: str
    reference: str
    archive: str
    key: str
    seconds: float
    cached: bool


def _dockerignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _matches(rel: str, pattern: str) -> bool:
    p = pattern.rstrip("/")
    hit = fnmatch.fnmatch(rel, p) or rel.startswith(p + "/") or fnmatch.fnmatch(rel, p + "/*")
    if "**" in p:
        hit = hit or fnmatch.fnmatch(rel, p.replace("**/", "*/"))
    return hit


def _included(rel: str, patterns: Sequence[str]) -> bool:
    included = True
    for pat in patterns:
        neg = pat.startswith("!")
        if _matches(rel, pat[1:] if neg else pat):
            included = neg
    return included


def _prunable(rel_dir: str, patterns: Sequence[str]) -> bool:
    """A folder excluded as a whole that no ``!`` pattern can reach into (nothing to walk there).

    Only literal re-include patterns are reasoned about; any wildcard in one keeps every
    folder walked (correct, only slower).
    """
    if _included(rel_dir, patterns):
        return False
    for pat in patterns:
        if pat.startswith("!"):
            target = pat[1:].rstrip("/")
            if any(c in target for c in "*?["):
                return False
            if target == rel_dir or target.startswith(rel_dir + "/"):
                return False
    return True


def context_files(root: Path) -> list[Path]:
    """The build context as .dockerignore leaves it (last matching pattern wins, ``!`` re-includes)."""
    patterns = _dockerignore_patterns(root)
    out = []
    for d, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(d, root)
        dirs[:] = [
            x
            for x in dirs
            if x not in (".git", ".venv", ".venv-localstack", "node_modules")
            and not _prunable(os.path.normpath(os.path.join(rel_dir, x)), patterns)
        ]
        for name in files:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if _included(rel, patterns):
                out.append(Path(rel))
    return sorted(out)


class ImageBuilder:
    """Builds the base and the service images in a private buildah store, with a cache."""

    def __init__(
        self,
        project_root: Path,
        cache_root: Path = Path("/var/cache/clinops"),
        *,
        progress: Progress = _quiet,
        storage_driver: str | None = None,
    ) -> None:
        self.project_root = project_root
        self.buildah_root = cache_root / "buildah"
        self.archives = cache_root / "images"
        self.log = self.archives / "build.log"
        self.progress = progress
        self.requested_driver = storage_driver
        self._storage: StorageChoice | None = None
        #: (step, seconds) of every command this builder ran, in order: where the time went.
        self.timings: list[tuple[str, float]] = []

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def storage(self) -> StorageChoice:
        """The storage driver, chosen once (a kernel probe) on first use."""
        if self._storage is None:
            self._storage = choose_storage_driver(self.buildah_root, requested=self.requested_driver)
            self.progress(f"images: buildah storage driver {self._storage.driver} ({self._storage.reason})")
            self.archives.mkdir(parents=True, exist_ok=True)
            with open(self.log, "a") as log:
                log.write(f"\n=== storage driver {self._storage.driver}: {self._storage.reason}\n")
        return self._storage

    @property
    def store(self) -> Path:
        """One private store per driver (a store made by one driver cannot be opened by another)."""
        return self.buildah_root / self.storage.driver

    def _buildah(self) -> list[str]:
        exe = shutil.which("buildah")
        if exe is None:
            raise PrerequisiteError(
                "buildah is not installed (package buildah; `bash scripts/setup-cluster.sh`)"
            )
        return [
            exe,
            "--root",
            str(self.store / "storage"),
            "--runroot",
            str(self.store / "run"),
            "--storage-driver",
            self.storage.driver,
        ]

    def _run(
        self,
        step: str,
        argv: Sequence[str],
        *,
        timeout: float = 1800.0,
        cwd: Path | None = None,
        capture: bool = False,
    ) -> str:
        self.archives.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {step}: "
                f"{' '.join(argv)}\n".encode()
            )
            log.flush()
            env = child_environment({"BUILDAH_ISOLATION": "chroot", "STORAGE_DRIVER": self.storage.driver})
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    list(argv),
                    stdout=subprocess.PIPE if capture else log,
                    stderr=log,
                    cwd=cwd,
                    env=env,
                    timeout=timeout,
                    check=False,
                    preexec_fn=lower_priority,
                )
            except subprocess.TimeoutExpired as e:
                raise BuildError(step, f"did not finish within {timeout:g}s", str(self.log)) from e
            except OSError as e:
                raise BuildError(step, f"could not start {argv[0]}: {e}", str(self.log)) from e
            seconds = time.monotonic() - started
            self.timings.append((step, seconds))
            log.write(f"=== {step}: {seconds:.1f}s, load average {os.getloadavg()[0]:.1f}\n".encode())
        if proc.returncode != 0:
            raise BuildError(step, f"exited with status {proc.returncode}", str(self.log))
        return proc.stdout.decode() if capture and proc.stdout else ""

    def _image_label(self, reference: str, label: str) -> str | None:
        try:
            out = self._run(
                f"inspect {reference}",
                [*self._buildah(), "inspect", "--type", "image", reference],
                capture=True,
                timeout=120,
            )
        except BuildError:
            return None
        labels = ((json.loads(out or "{}").get("OCIv1") or {}).get("config") or {}).get("Labels") or {}
        value = labels.get(label)
        return str(value) if value is not None else None

    def _trust_mounts(self) -> list[str]:
        """Bind-mount this machine's CA bundle (and a pip.conf naming it) into the RUN steps.

        The machine may reach PyPI through a TLS-inspecting egress whose CA only the host
        trusts; the mounts exist while a RUN step runs and are never part of a layer, so the
        images do not carry the machine's trust store.
        """
        bundle = Path(child_environment().get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
        if not bundle.is_file():
            return []
        pip_conf = self.archives / "pip.conf"
        self.archives.mkdir(parents=True, exist_ok=True)
        pip_conf.write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        return [
            "--volume",
            f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro",
            "--volume",
            f"{pip_conf}:/etc/pip.conf:ro",
        ]

    # -- the base ------------------------------------------------------------------------------
    @property
    def base_key(self) -> str:
        recipe = json.dumps([BASE_SUITE, BASE_MIRROR, sorted(BASE_PACKAGES), "minbase", 1])
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def build_base(self) -> tuple[str, bool]:
        """The stand-in base image; returns (its key, whether it came from the cache)."""
        key = self.base_key
        if self._image_label(BASE_STANDS_IN_FOR, "org.clinops.base.key") == key:
            return key, True
        if shutil.which("debootstrap") is None:
            raise PrerequisiteError("debootstrap is not installed (`bash scripts/setup-cluster.sh`)")
        b = self._buildah()
        self.progress(
            f"images: base from Debian {BASE_SUITE} packages ({', '.join(BASE_PACKAGES)}), "
            f"debootstrap (a few minutes; log {self.log})"
        )
        # a fixed name: a build killed half-way leaves its container, removed here on the next try
        subprocess.run([*b, "rm", "clinops-base-build"], capture_output=True, check=False)
        container = self._run(
            "buildah from scratch", [*b, "from", "--name", "clinops-base-build", "scratch"], capture=True
        ).strip()
        try:
            mount = self._run("buildah mount", [*b, "mount", container], capture=True).strip()
            self._run(
                "debootstrap",
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    BASE_SUITE,
                    mount,
                    BASE_MIRROR,
                ],
                timeout=1800,
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (Path(mount) / junk).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            self._run("buildah umount", [*b, "umount", container])
            labels = {
                "org.clinops.base.key": key,
                "org.clinops.base.stands-in-for": BASE_STANDS_IN_FOR,
                "org.clinops.base.made-from": f"debootstrap --variant=minbase {BASE_SUITE} "
                f"{BASE_MIRROR} + {' '.join(BASE_PACKAGES)}",
            }
            config = [
                *b,
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
            ]
            for k, v in labels.items():
                config += ["--label", f"{k}={v}"]
            self._run("buildah config", [*config, container])
            self._run("buildah commit", [*b, "commit", "--rm", container, BASE_STANDS_IN_FOR], timeout=1800)
        except BaseException:
            subprocess.run([*b, "rm", container], capture_output=True, check=False)
            raise
        return key, False

    # -- the services ----------------------------------------------------------------------------
    def service_key(self, service: str, base_key: str, context: Sequence[Path] | None = None) -> str:
        """Hash of the base key, the Dockerfile and every file of the build context.

        ``context``: the context's files when the caller already listed them (one walk per build).
        """
        h = hashlib.sha256(base_key.encode())
        dockerfile = self.project_root / "services" / service / "Dockerfile"
        h.update(dockerfile.read_bytes())
        for rel in context if context is not None else context_files(self.project_root):
            h.update(str(rel).encode() + b"\0" + (self.project_root / rel).read_bytes())
        return h.hexdigest()[:16]

    def build(self, references: Mapping[str, str]) -> list[BuiltImage]:
        """Build ``{service folder: image reference}``; returns one record per image."""
        for service in references:
            if not (self.project_root / "services" / service / "Dockerfile").is_file():
                raise PrerequisiteError(
                    f"no Dockerfile for {service!r} under {self.project_root / 'services'}"
                )
        base_key = self.base_key  # the recipe's hash: known without building the base
        context = context_files(self.project_root)
        keys = {service: self.service_key(service, base_key, context) for service in references}
        b: list[str] = []
        if any(not (self.archives / f"{s}-{k}.tar").is_file() for s, k in keys.items()):
            self.build_base()  # only when an image must be built: a warm cache runs no buildah at all
            b = self._buildah()
        out = []
        for service, reference in references.items():
            t0 = time.monotonic()
            key = keys[service]
            archive = self.archives / f"{service}-{key}.tar"
            cached = archive.is_file()
            if not cached:
                self.progress(f"images: buildah build services/{service}/Dockerfile -> {reference}")
                self._run(
                    f"buildah build {service}",
                    [
                        *b,
                        "build",
                        "--isolation",
                        "chroot",
                        "--pull=never",
                        "--layers",  # the three Dockerfiles share their build stage: pip runs once
                        *self._trust_mounts(),
                        "-f",
                        f"services/{service}/Dockerfile",
                        "-t",
                        reference,
                        ".",
                    ],
                    cwd=self.project_root,
                    timeout=3600,
                )
                tmp = archive.with_suffix(f".{os.getpid()}.tmp")  # two builders never share one
                tmp.unlink(missing_ok=True)
                self._run(
                    f"buildah push {service}",
                    [*b, "push", reference, f"docker-archive:{tmp}:{reference}"],
                    timeout=1800,
                )
                tmp.replace(archive)
                for stale in self.archives.glob(f"{service}-*.tar"):  # 0.5 GB each: older inputs
                    if stale != archive and stale.stem.removeprefix(f"{service}-").isalnum():
                        stale.unlink(missing_ok=True)
            out.append(BuiltImage(service, reference, str(archive), key, time.monotonic() - t0, cached))
        return out


def chart_references(project_root: Path, environment: str = "dev") -> dict[str, str]:
    """``{service folder: image reference}`` exactly as the charts pin them for ``environment``.

    ``<global.imageRegistry>/<repository>:<tag>``: the registry from the umbrella chart's values
    (the environment's file wins), repository and tag from the subchart that deploys it.
    """
    import yaml

    chart = project_root / "charts" / "clinical-mlops"
    registry = ""
    for name in ("values.yaml", f"values-{environment}.yaml"):
        path = chart / name
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
            registry = ((data.get("global") or {}).get("imageRegistry")) or registry
    wanted = {repo: service for service, repo in SERVICE_REPOSITORIES.items()}
    found: dict[str, str] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            repo, tag = node.get("repository"), node.get("tag")
            if isinstance(repo, str) and repo in wanted and tag is not None:
                found.setdefault(wanted[repo], f"{registry}/{repo}:{tag}" if registry else f"{repo}:{tag}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for values in sorted((chart / "charts").glob("*/values.yaml")):
        walk(yaml.safe_load(values.read_text()) or {})
    missing = sorted(set(SERVICE_REPOSITORIES) - set(found))
    if missing:
        raise PrerequisiteError(f"the charts under {chart} pin no image for {missing}")
    return found
