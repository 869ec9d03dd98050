"""Unit tier of the Debian cluster's image route and of its Prometheus pod discovery (issue 13).

The image route: which buildah storage driver is used and why (overlay when the kernel mounts
overlayfs, vfs with the reason otherwise, never a silent fallback from a request), one store
per driver, the cache keyed by the inputs (unchanged inputs never rebuild, a change to what
is copied into the image does). The build itself (buildah, debootstrap, pip) is the cluster
tier's; here only the process boundary is replaced, to see which commands would run.

The Prometheus side: the one Go-module build serves the Rollouts controller (its cache
layout unchanged) and Prometheus (with Kubernetes discovery); the scrape job reads exactly
the annotations the charts put on the pods; its identity may only read pods.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from clinops_lib.clusters.debian import build, images, metrics
from clinops_lib.clusters.debian.pki import make_pki
from clinops_lib.exceptions import ConfigError, PrerequisiteError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


# -- the storage driver --------------------------------------------------------------------------
def test_overlay_is_chosen_when_the_kernel_mounts_it_and_vfs_names_the_reason_otherwise(
    tmp_path: Path,
) -> None:
    probed: list[Path] = []

    def allows(scratch: Path) -> str | None:
        probed.append(scratch)
        return None

    choice = images.choose_storage_driver(tmp_path, probe=allows)
    assert choice.driver == "overlay" and probed == [tmp_path]

    refused = images.choose_storage_driver(tmp_path, probe=lambda _: "mount -t overlay failed: EPERM")
    assert refused.driver == "vfs"
    assert "EPERM" in refused.reason and "vfs" in refused.reason  # the message says why and what it costs


def test_a_requested_driver_is_honoured_or_refused_never_silently_replaced(tmp_path: Path) -> None:
    def never(_: Path) -> str | None:
        raise AssertionError("vfs needs no probe")

    assert images.choose_storage_driver(tmp_path, requested="vfs", probe=never).driver == "vfs"
    with pytest.raises(PrerequisiteError, match="overlay requested, but not root"):
        images.choose_storage_driver(tmp_path, requested="overlay", probe=lambda _: "not root")
    with pytest.raises(PrerequisiteError, match="unknown buildah storage driver 'btrfs'"):
        images.choose_storage_driver(tmp_path, requested="btrfs")


def test_the_overlay_probe_answers_and_leaves_nothing_behind(tmp_path: Path) -> None:
    scratch = tmp_path / "buildah"
    answer = images.overlay_mount_problem(scratch)
    assert answer is None or isinstance(answer, str) and answer
    assert list(scratch.iterdir()) == []  # no probe folder, nothing mounted
    mounts = Path("/proc/self/mounts").read_text()
    assert str(scratch) not in mounts


def test_each_driver_has_its_own_store(tmp_path: Path) -> None:
    # a store made by one driver cannot be opened by the other: they must never share a folder
    overlay = images.ImageBuilder(ROOT, tmp_path, storage_driver="overlay")
    overlay._storage = images.StorageChoice("overlay", "test")
    vfs = images.ImageBuilder(ROOT, tmp_path, storage_driver="vfs")
    assert overlay.store != vfs.store and overlay.store.parent == vfs.store.parent == tmp_path / "buildah"
    argv = vfs._buildah() if images.shutil.which("buildah") else None
    if argv is not None:
        assert argv[argv.index("--storage-driver") + 1] == "vfs"
        assert argv[argv.index("--root") + 1] == str(tmp_path / "buildah" / "vfs" / "storage")


# -- the cache key and the route -----------------------------------------------------------------------
def _project(root: Path) -> Path:
    (root / "services" / "svc").mkdir(parents=True)
    (root / "services" / "svc" / "Dockerfile").write_text(
        "FROM python:3.11.10-slim-bookworm\nCOPY app.py /app/\n"
    )
    (root / "app.py").write_text("print('v1')\n")
    (root / "notes.txt").write_text("not in the image\n")
    (root / ".dockerignore").write_text("*\n!app.py\n")
    return root


def test_the_image_key_follows_exactly_what_goes_into_the_image(tmp_path: Path) -> None:
    root = _project(tmp_path / "repo")
    builder = images.ImageBuilder(root, tmp_path / "cache", storage_driver="vfs")
    key = builder.service_key("svc", "base1")
    assert builder.service_key("svc", "base1") == key  # unchanged inputs: the same key
    (root / "notes.txt").write_text("edited, still outside the build context\n")
    assert builder.service_key("svc", "base1") == key
    assert builder.service_key("svc", "base2") != key  # another base
    (root / "app.py").write_text("print('v2')\n")
    changed = builder.service_key("svc", "base1")
    assert changed != key
    (root / "services" / "svc" / "Dockerfile").write_text("FROM python:3.11.10-slim-bookworm\n")
    assert builder.service_key("svc", "base1") not in (key, changed)


def test_unchanged_inputs_are_never_rebuilt_and_changed_ones_are_built_with_the_chosen_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "repo")
    builder = images.ImageBuilder(root, tmp_path / "cache", storage_driver="overlay")
    builder._storage = images.StorageChoice("overlay", "test")
    ran: list[tuple[str, list[str]]] = []

    def fake_run(step: str, argv: list[str], **_: object) -> str:  # the process boundary only
        ran.append((step, list(argv)))
        if step.startswith("buildah push"):
            Path(argv[-1].split(":")[1]).write_bytes(b"archive")
        return ""

    monkeypatch.setattr(builder, "build_base", lambda: ("base1", True))
    monkeypatch.setattr(builder, "_run", fake_run)
    monkeypatch.setattr(images.shutil, "which", lambda name: f"/usr/bin/{name}")
    first = builder.build({"svc": "registry.local/svc:1.0"})
    assert [s for s, _ in ran] == ["buildah build svc", "buildah push svc"] and not first[0].cached
    build_argv = ran[0][1]
    assert build_argv[build_argv.index("--storage-driver") + 1] == "overlay"
    assert "--layers" in build_argv and "--pull=never" in build_argv  # the shared build stage is reused
    assert Path(first[0].archive).read_bytes() == b"archive"

    ran.clear()
    monkeypatch.setattr(builder, "build_base", lambda: pytest.fail("a warm cache needs no base"))
    again = builder.build({"svc": "registry.local/svc:1.0"})
    assert ran == [] and again[0].cached and again[0].archive == first[0].archive
    monkeypatch.setattr(builder, "build_base", lambda: ("base1", True))

    (root / "app.py").write_text("print('v2')\n")
    changed = builder.build({"svc": "registry.local/svc:1.0"})
    assert [s for s, _ in ran] == ["buildah build svc", "buildah push svc"]
    assert changed[0].key != first[0].key and not Path(first[0].archive).exists()  # the stale archive goes


# -- the Go-module builds ------------------------------------------------------------------------------
def test_the_rollouts_controller_cache_layout_is_unchanged_by_the_shared_module_build(tmp_path: Path) -> None:
    cache = build.BuildCache(tmp_path)
    assert cache.rollouts == tmp_path / "argo-rollouts" / "v1.8.3"
    assert cache.rollouts_controller == cache.rollouts / "rollouts-controller"
    assert cache.rollouts_source == cache.rollouts / "src"
    assert build.ROLLOUTS_CONTROLLER.keep_source  # its CRDs and RBAC are read from the source


def test_prometheus_is_built_with_kubernetes_discovery_and_cached_by_its_record(tmp_path: Path) -> None:
    spec = build.PROMETHEUS
    assert {"remove_all_sd", "enable_kubernetes_sd"} <= set(spec.tags)
    assert set(spec.binaries) == {"prometheus", "promtool"}
    assert spec.module_version.startswith("v0.3") and spec.version.startswith("v3.")  # v3.x = module v0.3xx
    cache = build.BuildCache(tmp_path)
    folder = cache.module_folder(spec)
    assert folder == tmp_path / "prometheus" / spec.version and cache.promtool == folder / "promtool"
    assert not cache.prometheus_ready()
    folder.mkdir(parents=True)
    for name in spec.binaries:
        (folder / name).write_bytes(b"\x7fELF" + name.encode())
    build._write_manifest(folder, {n: folder / n for n in spec.binaries}, {"recipe": spec.recipe})
    assert cache.prometheus_ready()
    (folder / "promtool").write_bytes(b"truncated")  # a binary that is not the recorded one
    assert not cache.prometheus_ready()


# -- the pod discovery -------------------------------------------------------------------------------
def _access(tmp_path: Path) -> metrics.ApiAccess:
    return metrics.ApiAccess(
        "https://127.0.0.1:16442", tmp_path / "ca.crt", tmp_path / "p.crt", tmp_path / "p.key"
    )


def test_the_pod_job_keeps_annotated_running_pods_at_the_annotated_port_and_path(tmp_path: Path) -> None:
    job = metrics.pod_scrape_job(_access(tmp_path), namespaces=("clinops-ingestion",))
    sd = job["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod" and sd["api_server"] == "https://127.0.0.1:16442"
    assert sd["namespaces"] == {"names": ["clinops-ingestion"]}
    assert set(sd["tls_config"]) == {"ca_file", "cert_file", "key_file"}
    assert job["honor_labels"] is True
    rules = job["relabel_configs"]
    keep = [r for r in rules if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert keep[1]["source_labels"] == ["__meta_kubernetes_pod_phase"]
    path = next(r for r in rules if r.get("target_label") == "__metrics_path__")
    assert path["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_path"]
    address = next(r for r in rules if r.get("target_label") == "__address__")
    assert address["source_labels"][1] == "__meta_kubernetes_pod_annotation_prometheus_io_port"
    # Prometheus anchors the regex and joins source labels with ';'
    regex = re.compile(f"^(?:{address['regex']})$")

    def rewrite(value: str) -> str | None:
        m = regex.match(value)
        return None if m is None else address["replacement"].replace("$1", m[1]).replace("$2", m[2])

    assert rewrite("10.88.0.7:8080;9090") == "10.88.0.7:9090"  # a declared port, another annotated
    assert rewrite("10.88.0.7;8080") == "10.88.0.7:8080"  # no declared port
    assert rewrite("10.88.0.7:8080;") is None  # no annotation: the address stays


def test_the_pod_job_refuses_a_plain_http_api_server(tmp_path: Path) -> None:
    access = metrics.ApiAccess("http://127.0.0.1:16442", tmp_path / "a", tmp_path / "b", tmp_path / "c")
    with pytest.raises(ConfigError, match="https"):
        metrics.pod_scrape_job(access)


def test_the_charts_pods_carry_the_annotations_the_job_reads() -> None:
    from clinops_lib.charts.render import render

    pods = {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in render("dev")
        if o.get("kind") in ("Rollout", "Deployment")
        and o["metadata"]["name"] in ("clinical-gateway", "model-serving")
    }
    assert set(pods) == {"clinical-gateway", "model-serving"}
    for name, template in pods.items():
        notes = template["metadata"].get("annotations") or {}
        assert set(metrics.SCRAPE_ANNOTATIONS) <= set(notes), name
        assert notes["prometheus.io/scrape"] == "true"
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert int(notes["prometheus.io/port"]) in ports, name  # the port the service listens on
        assert notes["prometheus.io/path"] == "/metrics"


def test_prometheus_identity_may_only_read_pods(tmp_path: Path) -> None:
    role, binding = metrics.pod_scrape_rbac()
    assert role["kind"] == "ClusterRole" and binding["roleRef"]["name"] == role["metadata"]["name"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": metrics.PROMETHEUS_USER}
    ]
    pki = make_pki(
        tmp_path / "pki",
        node_name="node",
        node_ip="192.0.2.2",
        service_ip="10.0.0.1",
        extra_clients=metrics.PROMETHEUS_CLIENT_IDENTITY,
    )
    access = metrics.ApiAccess.from_pki(pki, "https://127.0.0.1:16442")
    assert access.missing() == []
    cert = x509.load_pem_x509_certificate(access.cert_file.read_bytes())
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        metrics.PROMETHEUS_USER
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []  # no group: no system:masters


def test_the_context_walk_skips_excluded_folders_but_never_a_re_included_file(tmp_path: Path) -> None:
    for rel in ("keep/inner/a.py", "keep/other/b.py", "junk/deep/c.py", "junk/deep/x.py", "top.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / ".dockerignore").write_text("*\n!keep/inner/\n")
    assert images.context_files(tmp_path) == [Path("keep/inner/a.py")]
    assert images._prunable("junk", ["*", "!keep/inner/"]) and not images._prunable(
        "keep", ["*", "!keep/inner/"]
    )
    # a wildcard re-include can reach any folder: nothing is skipped, the deep file is found
    (tmp_path / ".dockerignore").write_text("*\n!keep/inner/\n!**/x.py\n")
    assert images.context_files(tmp_path) == [Path("junk/deep/x.py"), Path("keep/inner/a.py")]


def test_the_local_prometheus_runs_the_given_binary_with_the_extra_jobs(tmp_path: Path) -> None:
    from clinops_lib.config import Settings
    from clinops_lib.targets.local.components import Prometheus

    job = metrics.pod_scrape_job(_access(tmp_path))
    default = Prometheus(Settings(state_dir=tmp_path / "a"))
    assert default.spec().argv[0] == "prometheus" and POD_JOB_NAME not in _jobs(default)
    fake = tmp_path / "bin" / "prometheus"
    prom = Prometheus(Settings(state_dir=tmp_path / "b"), binary=fake, extra_scrape_configs=[job])
    assert prom.spec().argv[0] == str(fake)
    assert _jobs(prom)[-1] == POD_JOB_NAME and {"prometheus", "haproxy"} <= set(_jobs(prom))
    with pytest.raises(PrerequisiteError, match="not found or not executable"):
        prom.prepare()  # the binary is not there: refused before anything starts
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    prom.prepare()
    assert "kubernetes_sd_configs" in (prom.dir / "prometheus.yml").read_text()


POD_JOB_NAME = metrics.POD_JOB


def _jobs(prom: object) -> list[str]:
    return [j["job_name"] for j in prom.config()["scrape_configs"]]  # type: ignore[attr-defined]


def test_a_module_build_refuses_to_start_without_a_go_as_new_as_its_go_mod(tmp_path: Path) -> None:
    from dataclasses import replace

    future = replace(build.PROMETHEUS, min_go=(9, 99))
    with pytest.raises(PrerequisiteError, match=r"Go >= 9\.99 for the prometheus module"):
        build.build_go_module(future, build.BuildCache(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()  # nothing downloaded or created
    assert build.PROMETHEUS.min_go >= (1, 26)  # Prometheus v3.16's go.mod says go 1.26.7
