"""The write-once archive against a REAL LocalStack 4.12.0 (the session's shared local platform).

The evidence bucket is created from the inventory (Object Lock, compliance mode, dev retention
1 day, versioning on) exactly as ``clinops inventory apply`` creates it. What LocalStack 4.12
enforces is tested, not assumed: a locked version cannot be deleted (not even with
BypassGovernanceRetention), its retention cannot be shortened or switched to governance,
versioning cannot be suspended, a bucket with versions cannot be deleted; an expired
retention does allow deletion (so the clock is really compared). Then ``push`` (idempotent,
resumable) and ``compare`` (``verify --remote``) on real archives.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import SharedPlatform
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinops_lib import evidence
from clinops_lib import inventory as inv_mod
from clinops_lib.cli import main
from clinops_lib.config import Settings
from clinops_lib.evidence.manifest import CHAIN_FILE
from clinops_lib.evidence.remote import Remote, compare, push
from clinops_lib.exceptions import EvidenceError

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)

pytestmark = [pytest.mark.component, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def settings(local_platform: Callable[[Iterable[int]], SharedPlatform]) -> Settings:
    """The LocalStack of the session's one local platform (Level 0)."""
    return local_platform([0]).settings


@pytest.fixture(scope="module")
def bucket(settings: Settings) -> str:
    """The inventory's evidence bucket, created by the inventory's own apply."""
    data = json.loads(inv_mod.default_inventory_path().read_text())
    data["project"] = "ev-remote"
    inv = inv_mod.parse_inventory(data, env="dev")
    inv_mod.apply_inventory(inv, inv_mod.make_clients(settings))
    return inv.buckets["evidence"].name


def _s3(settings: Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.localstack_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _denied(call: Any) -> str:
    with pytest.raises(ClientError) as e:
        call()
    return str(e.value.response["Error"]["Code"])


# -- what LocalStack 4.12 enforces -------------------------------------------------------------------
def test_evidence_bucket_is_locked_in_compliance_mode_from_the_inventory(settings, bucket) -> None:
    s3 = _s3(settings)
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
    }
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    prod = inv_mod.load_inventory(env="prod").buckets["evidence"]
    assert (prod.object_lock_mode, prod.object_lock_days) == ("COMPLIANCE", 3650)
    data = json.loads(inv_mod.default_inventory_path().read_text())
    differences = inv_mod.drift(
        inv_mod.parse_inventory({**data, "project": "ev-remote"}, env="dev"), inv_mod.make_clients(settings)
    )
    assert [d for d in differences if bucket in str(d)] == []  # observed lock == declared lock
    longer = json.loads(json.dumps(data))
    longer["project"] = "ev-remote"
    longer["buckets"]["evidence"]["object_lock"]["retention_days"]["dev"] = 2
    differences = inv_mod.drift(inv_mod.parse_inventory(longer, env="dev"), inv_mod.make_clients(settings))
    assert [d for d in differences if bucket in str(d) and "object_lock" in str(d)], differences


def test_localstack_enforces_compliance_retention(settings, bucket) -> None:
    s3 = _s3(settings)
    v = s3.put_object(Bucket=bucket, Key="probe/a", Body=b"1", ChecksumAlgorithm="SHA256")["VersionId"]
    head = s3.head_object(Bucket=bucket, Key="probe/a", VersionId=v)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(hours=23)
    assert _denied(lambda: s3.delete_object(Bucket=bucket, Key="probe/a", VersionId=v)) == "AccessDenied"
    assert (
        _denied(
            lambda: s3.delete_object(
                Bucket=bucket, Key="probe/a", VersionId=v, BypassGovernanceRetention=True
            )
        )
        == "AccessDenied"
    )
    soon = datetime.now(UTC) + timedelta(minutes=1)
    assert (
        _denied(
            lambda: s3.put_object_retention(
                Bucket=bucket,
                Key="probe/a",
                VersionId=v,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon},
            )
        )
        == "AccessDenied"
    )
    later = datetime.now(UTC) + timedelta(days=5)
    assert (
        _denied(
            lambda: s3.put_object_retention(
                Bucket=bucket,
                Key="probe/a",
                VersionId=v,
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later},
            )
        )
        == "AccessDenied"
    )
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "probe/a", "VersionId": v}]})
    assert out.get("Errors") and not out.get("Deleted")
    assert s3.get_object(Bucket=bucket, Key="probe/a", VersionId=v)["Body"].read() == b"1"
    assert (
        _denied(
            lambda: s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
        )
        == "InvalidBucketState"
    )
    assert _denied(lambda: s3.delete_bucket(Bucket=bucket)) == "BucketNotEmpty"
    # a plain DELETE only adds a delete marker (as on AWS): the locked version stays readable
    s3.delete_object(Bucket=bucket, Key="probe/a")
    assert s3.get_object(Bucket=bucket, Key="probe/a", VersionId=v)["Body"].read() == b"1"


def test_localstack_compares_the_retain_until_date(settings, bucket) -> None:
    """An object locked for two seconds can be deleted after three: the lock is a real date check."""
    s3 = _s3(settings)
    until = datetime.now(UTC) + timedelta(seconds=2)
    v = s3.put_object(
        Bucket=bucket,
        Key="probe/short",
        Body=b"x",
        ChecksumAlgorithm="SHA256",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )["VersionId"]
    assert _denied(lambda: s3.delete_object(Bucket=bucket, Key="probe/short", VersionId=v)) == "AccessDenied"
    time.sleep(3)
    s3.delete_object(Bucket=bucket, Key="probe/short", VersionId=v)


# -- push and compare --------------------------------------------------------------------------------
def _seal(archive: Path, scratch: Path, i: int, key: Path) -> Path:
    staging = scratch / f"staging-{i}"
    (staging / "data").mkdir(parents=True)
    (staging / "notebook.html").write_text(f"<html>{i}</html>")
    (staging / "data" / "t.csv").write_text(f"a\n{i}\n")
    return evidence.seal(
        staging,
        archive,
        runbook="demo",
        run_id=f"r{i:03d}",
        started=T0 + timedelta(minutes=i),
        verdict={"verdict": "PASSED", "checks": []},
        signing_key=key,
    )


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, list[Path], Path]:
    key = tmp_path / "k.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    archive = tmp_path / "evidence"
    return archive, [_seal(archive, tmp_path, i, key) for i in range(3)], key


def test_push_is_idempotent_and_verify_remote_agrees(settings, bucket, signed, request) -> None:
    archive, bundles, _ = signed
    remote = Remote(_s3(settings), bucket, prefix=request.node.name)
    lines: list[str] = []
    first = push(archive, remote, progress=lines.append)
    n_files = sum(1 for p in archive.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert len(first.uploaded) == n_files + 1  # plus checkpoints/00000003.json
    assert lines[0].startswith("[1/") and not first.conflicts
    second = push(archive, remote)
    assert second.uploaded == [] and second.skipped == n_files + 1
    assert compare(archive, remote) == []


def test_interrupted_push_resumes(settings, bucket, signed, request) -> None:
    archive, bundles, _ = signed
    remote = Remote(_s3(settings), bucket, prefix=request.node.name)
    real_put, calls = remote.put, []

    def failing_put(key: str, data: bytes, digest: str) -> None:
        if len(calls) == 5:
            raise EvidenceError("connection reset (simulated)")
        calls.append(key)
        real_put(key, data, digest)

    remote.put = failing_put  # type: ignore[method-assign]
    with pytest.raises(EvidenceError, match="simulated"):
        push(archive, remote)
    remote.put = real_put  # type: ignore[method-assign]
    partial = compare(archive, remote)
    assert partial and all("not in the locked remote copy" in p for p in partial), partial
    resumed = push(archive, remote)
    assert resumed.skipped == 5 and not resumed.conflicts
    assert compare(archive, remote) == []


def test_verify_remote_catches_tail_truncation_that_local_verify_misses(
    settings, bucket, signed, tmp_path, request, monkeypatch
) -> None:
    archive, bundles, key = signed
    saved_checkpoint = (archive / "checkpoint.json").read_bytes()
    newest = _seal(archive, tmp_path, 3, key)
    remote = Remote(_s3(settings), bucket, prefix=request.node.name)
    push(archive, remote)
    # the attacker deletes the newest bundle, its chain line, and restores the older checkpoint
    shutil.rmtree(newest)
    lines = (archive / CHAIN_FILE).read_text().splitlines()
    (archive / CHAIN_FILE).write_text("\n".join(lines[:-1]) + "\n")
    (archive / "checkpoint.json").write_bytes(saved_checkpoint)
    assert evidence.verify(archive).problems == []  # locally consistent: only the locked copy can tell
    problems = compare(archive, remote)
    rel = newest.relative_to(archive).as_posix()
    assert f"{rel}: in the locked remote copy but missing locally (deleted?)" in problems
    assert any(p.startswith(f"{rel}: tail truncated") for p in problems), problems
    monkeypatch.setenv("CLINOPS_PORT_BASE", str(settings.ports.base))  # the CLI reaches this LocalStack
    rc = main(
        ["evidence", "verify", str(archive), "--remote", "--bucket", bucket, "--prefix", request.node.name]
    )
    assert rc == 1


def test_tampered_local_file_is_a_conflict_not_an_overwrite(settings, bucket, signed, request) -> None:
    archive, bundles, _ = signed
    remote = Remote(_s3(settings), bucket, prefix=request.node.name)
    push(archive, remote)
    (bundles[1] / "notebook.html").write_text("<html>rewritten history</html>")
    report = push(archive, remote)
    assert report.conflicts == [
        f"{bundles[1].relative_to(archive).as_posix()}/notebook.html: "
        "the locked copy differs from the local file (not overwritten)"
    ]
