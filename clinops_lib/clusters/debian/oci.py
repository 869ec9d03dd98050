"""Single-layer OCI image archives written directly (no registry, no daemon, no builder).

Used for images whose whole content is a static binary and a few files: the pause image
(the sandbox every pod starts with) from the ``pause`` binary compiled from the Kubernetes
tree, and small test images. The archive is an ``oci-layout`` tarball that
``ctr -n k8s.io images import`` reads; every timestamp and owner is fixed, so the same inputs
give the same digest (the image cache is keyed by it).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ImageConfig", "ImageFile", "write_oci_archive"]

EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class ImageFile:
    """One entry of the layer: a file (``data`` or ``source``), a symlink or a folder."""

    path: str
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o644
    symlink: str | None = None
    directory: bool = False


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    workdir: str = "/"
    labels: Mapping[str, str] = field(default_factory=dict)


def _info(name: str, **attrs: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name.strip("/"))
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti


def _layer(files: Sequence[ImageFile]) -> bytes:
    buf = io.BytesIO()
    made: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def parents(path: str) -> None:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    tar.addfile(_info(d, type=tarfile.DIRTYPE, mode=0o755))

        for f in sorted(files, key=lambda f: f.path):
            parents(f.path)
            name = f.path.strip("/")
            if f.directory:
                if name not in made:
                    made.add(name)
                    tar.addfile(_info(name, type=tarfile.DIRTYPE, mode=f.mode))
            elif f.symlink is not None:
                tar.addfile(_info(name, type=tarfile.SYMTYPE, linkname=f.symlink, mode=0o777))
            else:
                data = f.data if f.data is not None else Path(str(f.source)).read_bytes()
                tar.addfile(_info(name, size=len(data), mode=f.mode), io.BytesIO(data))
    return buf.getvalue()


def write_oci_archive(out: Path, reference: str, files: Sequence[ImageFile], config: ImageConfig) -> str:
    """Write ``out`` (an OCI layout tarball naming ``reference``); returns the manifest digest."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}", len(data)

    layer = _layer(files)
    layer_digest, layer_size = blob(layer)
    image_config = {
        "created": EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(config.entrypoint) if config.entrypoint else None,
            "Cmd": list(config.cmd) if config.cmd else None,
            "Env": list(config.env),
            "User": config.user,
            "WorkingDir": config.workdir,
            "Labels": dict(config.labels) or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": EPOCH, "created_by": "clinops oci.write_oci_archive"}],
    }
    config_digest, config_size = blob(json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:

        def add(name: str, data: bytes) -> None:
            tar.addfile(_info(name, size=len(data), mode=0o644), io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index, sort_keys=True).encode())
        tar.addfile(_info("blobs", type=tarfile.DIRTYPE, mode=0o755))
        tar.addfile(_info("blobs/sha256", type=tarfile.DIRTYPE, mode=0o755))
        for digest in sorted(blobs):
            add(f"blobs/sha256/{digest}", blobs[digest])
    tmp.replace(out)
    return manifest_digest
