"""Unit tier of clusters/debian: what can be checked without starting a cluster.

Certificates carry the identities the authorizers expect, image archives are deterministic and
well-formed, the image build context follows .dockerignore, ports do not collide, the build
refuses to start without its packages. The cluster itself is tested in tests/cluster/.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clinops_lib.clusters.debian import build
from clinops_lib.clusters.debian.cluster import ClusterConfig, ClusterPorts, DebianCluster
from clinops_lib.clusters.debian.images import chart_references, context_files
from clinops_lib.clusters.debian.oci import ImageConfig, ImageFile, write_oci_archive
from clinops_lib.clusters.debian.pki import make_pki
from clinops_lib.exceptions import PrerequisiteError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def _subject(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return orgs, cns


def test_pki_identities_match_what_rbac_and_the_node_authorizer_expect(tmp_path: Path) -> None:
    pki = make_pki(
        tmp_path / "pki",
        node_name="node-a",
        node_ip="192.0.2.7",
        service_ip="10.0.0.1",
        extra_clients={"argo-rollouts": ("system:serviceaccounts", "system:serviceaccount:a:b")},
    )
    assert _subject(pki.cert("kubelet")) == (["system:nodes"], ["system:node:node-a"])
    assert _subject(pki.cert("kube-scheduler")) == ([], ["system:kube-scheduler"])
    assert _subject(pki.cert("admin"))[0] == ["system:masters"]
    assert _subject(pki.cert("argo-rollouts")) == (["system:serviceaccounts"], ["system:serviceaccount:a:b"])
    api = x509.load_pem_x509_certificate(pki.cert("apiserver").read_bytes())
    sans = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(i) for i in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "192.0.2.7",
        "10.0.0.1",
    }
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    usage = api.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    api.verify_directly_issued_by(ca)  # raises when the chain is wrong
    assert oct(pki.key("ca").stat().st_mode & 0o777) == "0o600"


def test_oci_archive_is_deterministic_and_names_the_reference(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    files = [ImageFile("pause", source=binary, mode=0o755), ImageFile("etc/motd", data=b"hi\n")]
    d1 = write_oci_archive(
        tmp_path / "a.tar", "registry.local/pause:3.2", files, ImageConfig(entrypoint=["/pause"])
    )
    d2 = write_oci_archive(
        tmp_path / "b.tar", "registry.local/pause:3.2", files, ImageConfig(entrypoint=["/pause"])
    )
    assert d1 == d2
    assert (
        hashlib.sha256((tmp_path / "a.tar").read_bytes()).digest()
        == hashlib.sha256((tmp_path / "b.tar").read_bytes()).digest()
    )
    with tarfile.open(tmp_path / "a.tar") as t:
        index = json.loads(t.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = index["manifests"][0]
        assert manifest["annotations"]["io.containerd.image.name"] == "registry.local/pause:3.2"
        blob = t.extractfile(f"blobs/sha256/{manifest['digest'].split(':')[1]}").read()  # type: ignore[union-attr]
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == manifest["digest"]
    other = write_oci_archive(
        tmp_path / "c.tar",
        "registry.local/pause:3.2",
        [ImageFile("pause", data=b"changed", mode=0o755)],
        ImageConfig(entrypoint=["/pause"]),
    )
    assert other != d1


def test_image_context_is_the_dockerignore_allowlist() -> None:
    files = {str(p) for p in context_files(ROOT)}
    assert "services/requirements.txt" in files and "clinops_lib/services/gateway.py" in files
    assert not any(
        f.startswith((".venv", "tests/", "evidence", ".git/")) or "__pycache__" in f for f in files
    )
    assert "clinops_lib/config.py" not in files


def test_image_references_are_the_ones_the_charts_pin() -> None:
    refs = chart_references(ROOT)
    assert set(refs) == {"clinical-gateway", "model-serving", "training-job"}
    assert all(":" in r and not r.endswith(":latest") for r in refs.values())


def test_cluster_ports_are_distinct_and_outside_the_ephemeral_range() -> None:
    ports = ClusterConfig().ports
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert max(ports.all()) < low  # a client socket can never hold one of them
    assert len(set(ports.all())) == len(ports.all())
    assert ClusterPorts(17200).apiserver == 17202


def test_build_refuses_to_start_without_its_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(build, "DEBIAN_GO", tmp_path / "no-go")
    cache = build.BuildCache(tmp_path / "cache")
    with pytest.raises(PrerequisiteError, match=r"Debian's Go 1\.19 .*setup-cluster\.sh"):
        build.build_kubernetes(cache)
    assert not (tmp_path / "cache").exists()  # nothing was started


def test_create_names_every_missing_runtime_package_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from clinops_lib.clusters.debian import cluster as cluster_module

    monkeypatch.setattr(cluster_module, "RUNTIME_PACKAGES", {str(tmp_path / "etcd"): "etcd-server"})
    c = DebianCluster(ClusterConfig(root=tmp_path / "root"))
    with pytest.raises(PrerequisiteError, match=r"etcd \(package etcd-server\)"):
        c.create()
    assert not (tmp_path / "root").exists()


# -- the source fixes of the Kubernetes tree ---------------------------------------------------------
def test_both_vendored_openapi_validators_are_fixed_and_a_kept_tree_is_patched_in_place(
    tmp_path: Path,
) -> None:
    # custom resources go through kube-openapi's fork: recipe 3 fixed only go-openapi's copy
    assert {rel for rel, _, _ in build.SOURCE_FIXES} == {
        "vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go",
        "vendor/github.com/go-openapi/validate/type.go",
    }
    assert build.KUBERNETES_RECIPE >= 4  # caches built by recipe 3 are rebuilt
    tree, log = tmp_path / "kubernetes-1.20.2", tmp_path / "build.log"
    for rel, before, _ in build.SOURCE_FIXES:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(f"func f(data interface{{}}) {{\n\t{before}\n\t\treturn\n\t}}\n")
    keep = tree / "_output" / "local" / "go" / "cache" / "entry"
    keep.parent.mkdir(parents=True)
    keep.write_text("compiled")
    build.prepare_tree(tree, log, replacements={})
    for rel, before, after in build.SOURCE_FIXES:
        text = (tree / rel).read_text()
        assert after in text and before not in text
    build.prepare_tree(tree, log, replacements={})  # idempotent: a fixed line is left alone
    assert keep.read_text() == "compiled"  # make's Go cache survives: only the fixed packages rebuild
    rel = build.SOURCE_FIXES[0][0]
    (tree / rel).write_text("upstream changed this file\n")
    with pytest.raises(build.BuildError, match="expected line not found once") as e:
        build.prepare_tree(tree, log, replacements={})
    assert e.value.step == "patch source" and e.value.log_file == str(log)


def test_the_build_cache_folder_comes_from_the_settings(tmp_path: Path) -> None:
    from clinops_lib.cli.cluster import config_from_settings
    from clinops_lib.config import Settings

    settings = Settings.from_env({"CLINOPS_CACHE_DIR": str(tmp_path / "cache")})
    assert settings.cache_dir == tmp_path / "cache"
    assert config_from_settings(settings).cache.kubernetes == tmp_path / "cache" / "kubernetes" / "v1.20.2"
