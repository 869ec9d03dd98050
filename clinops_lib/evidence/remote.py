"""The write-once copy of the evidence archive: push to the Object Lock bucket, compare with it.

A local archive can be edited by whoever has the disk: the signature protects what a bundle
says, the checkpoint protects the chain's length, but deleting the newest bundle *and*
restoring an older checkpoint leaves a consistent, shorter archive. The inventory's
``evidence`` bucket (S3 Object Lock, compliance mode, versioning on) keeps every object
version for the environment's retention, and nobody can shorten that. So:

* :func:`push` uploads every sealed bundle, every approval, the chain and the checkpoint
  (also as ``checkpoints/<size>.json``, one object per chain length, never overwritten).
  Idempotent and resumable: an object that is already there with the same SHA-256 (kept in
  its metadata) is skipped, so a rerun continues where an interrupted one stopped. Each
  bundle's ``manifest.json`` goes last, so a bundle counts as pushed only when complete. An
  object that is there with *different* content is never overwritten: it is reported.
* :func:`compare` lists the bundles on both sides and names every one missing on either
  side or different, and checks the local chain against the longest checkpoint ever pushed:
  a truncated tail is caught even when the local checkpoint was rolled back.

The archive's layout is mirrored key for key under an optional prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..exceptions import ConfigError, EvidenceError
from .checkpoint import CHECKPOINT_FILE, read_checkpoint
from .manifest import CHAIN_FILE, MANIFEST, read_chain, sha256_file

__all__ = ["EVIDENCE_BUCKET", "PushReport", "Remote", "compare", "push", "remote_from_settings"]

EVIDENCE_BUCKET = "evidence"  # the inventory key of the write-once bucket
CHECKPOINTS = "checkpoints"
SHA_META = "sha256"


@dataclass
class Remote:
    """Where the locked copy lives: an S3 client (boto3), the bucket and a key prefix."""

    s3: Any
    bucket: str
    prefix: str = ""

    def key(self, rel: str) -> str:
        return f"{self.prefix.strip('/')}/{rel}" if self.prefix.strip("/") else rel

    def rel(self, key: str) -> str:
        p = self.prefix.strip("/")
        return key[len(p) + 1 :] if p else key

    def keys(self) -> set[str]:
        """Every key under the prefix (paginated)."""
        out: set[str] = set()
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.prefix.strip("/"):
            kwargs["Prefix"] = self.prefix.strip("/") + "/"
        with _s3(f"s3://{self.bucket}: list"):
            for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
                out |= {o["Key"] for o in page.get("Contents", [])}
        return out

    def digest(self, key: str) -> str | None:
        with _s3(f"s3://{self.bucket}/{key}: head"):
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        return head.get("Metadata", {}).get(SHA_META)

    def get(self, key: str) -> bytes:
        with _s3(f"s3://{self.bucket}/{key}: get"):
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put(self, key: str, data: bytes, digest: str) -> None:
        with _s3(f"s3://{self.bucket}/{key}: put"):
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                Metadata={SHA_META: digest},
                ChecksumAlgorithm="SHA256",  # Object Lock buckets require an integrity checksum
            )


@contextlib.contextmanager
def _s3(what: str) -> Iterator[None]:
    """The one place botocore errors become :class:`EvidenceError` naming the object."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as e:
        err = e.response.get("Error", {})
        raise EvidenceError(f"{what}: {err.get('Code')}: {err.get('Message')}") from e
    except BotoCoreError as e:
        raise EvidenceError(f"{what}: {e}") from e


def remote_from_settings(settings: Settings, *, bucket: str | None = None, prefix: str = "") -> Remote:
    """The inventory's ``evidence`` bucket of ``settings.environment`` (or ``bucket``), reached
    like the inventory reaches AWS (LocalStack at ``settings.localstack_url`` on this machine)."""
    from ..inventory import load_inventory, make_clients

    if bucket is None:
        inventory = load_inventory(env=settings.environment)
        if EVIDENCE_BUCKET not in inventory.buckets:
            raise ConfigError(f"the inventory has no {EVIDENCE_BUCKET!r} bucket for the remote archive")
        bucket = inventory.buckets[EVIDENCE_BUCKET].name
    return Remote(make_clients(settings).s3, bucket, prefix)


@dataclass
class PushReport:
    uploaded: list[str] = field(default_factory=list)
    skipped: int = 0
    conflicts: list[str] = field(default_factory=list)


def _bundle_files(archive: Path, rel: str) -> list[str]:
    bundle = archive / rel
    files = sorted(p.relative_to(archive).as_posix() for p in bundle.rglob("*") if p.is_file())
    manifest = f"{rel}/{MANIFEST}"
    return [f for f in files if f != manifest] + [manifest]  # the manifest last: complete or absent


def _plan(archive: Path) -> Iterator[tuple[str, bool]]:
    """``(relative path, immutable)`` in upload order."""
    for entry in read_chain(archive):
        rel = str(entry.get("bundle"))
        if (archive / rel / MANIFEST).exists():
            for f in _bundle_files(archive, rel):
                yield f, True
    approvals = archive / "approvals"
    if approvals.is_dir():
        for p in sorted(approvals.rglob("*.approval.json")):
            yield p.relative_to(archive).as_posix(), True
    if (archive / CHAIN_FILE).exists():
        yield CHAIN_FILE, False
    if (archive / CHECKPOINT_FILE).exists():
        yield CHECKPOINT_FILE, False


def push(archive: Path, remote: Remote, progress: Callable[[str], None] | None = None) -> PushReport:
    """Upload what the remote does not have yet (see the module docstring)."""
    say = progress or (lambda _m: None)
    if not (archive / CHAIN_FILE).exists():
        raise EvidenceError(f"{archive}: not an evidence archive (no {CHAIN_FILE})")
    existing = remote.keys()
    plan = list(_plan(archive))
    if (archive / CHECKPOINT_FILE).exists():
        _, body = read_checkpoint((archive / CHECKPOINT_FILE).read_bytes())
        plan.insert(len(plan) - 1, (f"{CHECKPOINTS}/{int(body['size']):08d}.json", True))
    report = PushReport()
    for i, (rel, immutable) in enumerate(plan, start=1):
        source = archive / (CHECKPOINT_FILE if rel.startswith(f"{CHECKPOINTS}/") else rel)
        data = source.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        key = remote.key(rel)
        if key in existing:
            have = remote.digest(key)
            if have == digest:
                report.skipped += 1
                continue
            if immutable:
                report.conflicts.append(
                    f"{rel}: the locked copy differs from the local file (not overwritten)"
                )
                say(f"[{i}/{len(plan)}] CONFLICT {rel}")
                continue
        remote.put(key, data, digest)
        report.uploaded.append(rel)
        say(f"[{i}/{len(plan)}] {rel} ({len(data)} bytes)")
    return report


def compare(archive: Path, remote: Remote) -> list[str]:
    """Problems between the local archive and the locked copy, each naming the bundle."""
    problems: list[str] = []
    keys = {remote.rel(k) for k in remote.keys()}
    remote_bundles = {
        k[: -len(MANIFEST) - 1]
        for k in keys
        if k.endswith(f"/{MANIFEST}")
        and k.count("/") == 2
        and not k.startswith(("approvals/", f"{CHECKPOINTS}/"))
    }
    chain = read_chain(archive) if (archive / CHAIN_FILE).exists() else []
    local_bundles = {
        str(e.get("bundle")) for e in chain if (archive / str(e.get("bundle")) / MANIFEST).exists()
    }
    local_bundles |= {p.parent.relative_to(archive).as_posix() for p in archive.glob(f"*/*/{MANIFEST}")}
    for rel in sorted(remote_bundles - local_bundles):
        problems.append(f"{rel}: in the locked remote copy but missing locally (deleted?)")
    for rel in sorted(local_bundles - remote_bundles):
        problems.append(f"{rel}: not in the locked remote copy (not pushed yet?)")
    for rel in sorted(local_bundles & remote_bundles):
        if remote.digest(remote.key(f"{rel}/{MANIFEST}")) != sha256_file(archive / rel / MANIFEST):
            problems.append(f"{rel}/{MANIFEST}: differs from the locked remote copy")
    sizes = sorted(
        int(k[len(CHECKPOINTS) + 1 : -5])
        for k in keys
        if k.startswith(f"{CHECKPOINTS}/") and k.endswith(".json") and k[len(CHECKPOINTS) + 1 : -5].isdigit()
    )
    if sizes and sizes[-1] > len(chain):
        _, body = read_checkpoint(remote.get(remote.key(f"{CHECKPOINTS}/{sizes[-1]:08d}.json")))
        problems.append(
            f"{body.get('head_bundle')}: tail truncated: a pushed checkpoint records {sizes[-1]} bundle(s) "
            f"up to {body.get('head_bundle')}, the local chain holds {len(chain)}"
        )
    return problems
