"""Manual promotion end to end: 03 in prod stops AWAITING_APPROVAL, 04 promotes only with a
valid signed approval. Real local platform (port block 26600-26699), real CLI in subprocesses.

Order: 03 with ``CLINOPS_ENVIRONMENT=prod`` exits 0 with a bundle that awaits approval (green
running as preview, users on blue); 04 then exits 2 with nothing run and no bundle (a) without
any approval, (b) with an approval signed by a key not in the approvers registry, (c) with an
approval of another bundle copied next to this one; with a valid approval it promotes, and its
HTML copy and SUMMARY.md show the signature's printed name, UTC time and meaning. The archive,
approvals included, verifies. ``clinops down`` runs last, also when a test failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import enterable_tmpdir
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ports import PortAllocator

from clinops_lib import evidence
from clinops_lib.evidence import approvals as A

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.drills]

ROOT = Path(__file__).resolve().parent.parent
CLINOPS = [sys.executable, "-m", "clinops_lib.cli"]
PASS = "release manager passphrase"
SUBPROCESS_TIMEOUT_S = 3600
#: prod's analysis is 5 intervals of 1 m and its scale-down window 600 s; at the runbooks' default
#: compression (0.2) the promotion alone spends 2 min waiting out that window. What this module
#: checks is the approval gate, not the timing, so both runbooks run at 0.05: 3 s intervals of
#: ~300 preview and ~600 user requests each, a 30 s window that still holds the rollback drill.
PAUSE_SCALE = "0.05"


def _key(path: Path) -> bytes:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASS.encode()),
        )
    )
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def world(port_allocator: PortAllocator, request: pytest.FixtureRequest) -> Iterator[dict]:
    failed_before = request.session.testsfailed
    block = port_allocator.block()  # a platform of its own: the runbook runs it in the prod environment
    tmp = enterable_tmpdir("clinops-promotion-")
    keys = tmp / "keys"
    keys.mkdir()
    dana = _key(keys / "dana.pem")
    _key(keys / "mallory.pem")
    registry = tmp / "approvers.yaml"
    committed = yaml.safe_load((ROOT / "compliance" / "approvers.yaml").read_text())
    committed["approvers"] = [
        {"name": "Dana Release", "role": "release-manager", "public_key": dana.decode()}
    ]
    registry.write_text(yaml.safe_dump(committed))
    env = {
        **os.environ,
        "CLINOPS_PORT_BASE": str(block.base),
        "CLINOPS_STATE_DIR": str(tmp / "state"),
        "CLINOPS_ENVIRONMENT": "prod",
        "CLINOPS_APPROVERS": str(registry),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CLINOPS_SIGNING_KEY", None)
    w = {
        "tmp": tmp,
        "keys": keys,
        "registry": A.load_registry(registry),
        "env": env,
        "archive": tmp / "evidence",
    }
    try:
        yield w
    finally:
        subprocess.run([*CLINOPS, "down"], cwd=ROOT, env=env, capture_output=True, timeout=300, check=False)
        if request.session.testsfailed > failed_before:
            # the bundles (per-request records, drill log) and the components' logs say why
            print(f"\n[promotion] a test failed: state, logs and evidence kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        port_allocator.release(block)


def _clinops(w: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLINOPS, *args],
        cwd=ROOT,
        env=w["env"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def _explain(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout[-5000:]}\n--- stderr\n{p.stderr[-5000:]}"


def _bundles(archive: Path) -> list[Path]:
    return sorted(p.parent for p in archive.glob("*/*/manifest.json"))


@pytest.fixture(scope="module")
def awaiting(world) -> Path:
    proc = _clinops(
        world,
        "run",
        "runbooks/03-blue-green-drill.ipynb",
        "--target",
        "local",
        "-p",
        "pause_scale",
        PAUSE_SCALE,
        "--out",
        str(world["archive"]),
        "--no-progress",
    )
    assert proc.returncode == 0, _explain(proc)
    assert "AWAITING_APPROVAL" in proc.stdout
    (bundle,) = _bundles(world["archive"])
    return bundle


def test_blue_green_in_prod_ends_awaiting_approval(awaiting) -> None:
    verdict = json.loads((awaiting / "verdict.json").read_text())
    assert verdict["verdict"] == "PASSED"
    release = verdict["awaiting_approval"]
    assert release["environment"] == "prod" and release["service"] == "model-serving"
    assert A.read_release(awaiting) == release
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["drill outcome equals expect"]["measured"] == "AWAITING_APPROVAL"
    assert not any(name.startswith("failed user requests around") for name in checks)  # nothing switched
    assert "AWAITING_APPROVAL" in (awaiting / "SUMMARY.md").read_text()


def _promote(world, bundle: Path) -> subprocess.CompletedProcess[str]:
    return _clinops(
        world,
        "run",
        "runbooks/04-promote.ipynb",
        "--target",
        "local",
        "-p",
        "bundle",
        str(bundle),
        "-p",
        "pause_scale",
        PAUSE_SCALE,
        "--out",
        str(world["archive"]),
        "--no-progress",
    )


def _refused(world, bundle: Path, words: str) -> None:
    before = _bundles(world["archive"])
    proc = _promote(world, bundle)
    assert proc.returncode == 2, _explain(proc)
    assert words in proc.stderr, _explain(proc)
    assert _bundles(world["archive"]) == before  # nothing ran, nothing sealed


def test_promotion_refuses_without_an_approval(world, awaiting) -> None:
    _refused(world, awaiting, "no valid approval for promotion (none filed)")


def test_promotion_refuses_an_approval_by_an_unknown_key(world, awaiting, tmp_path) -> None:
    mallory_pub = (
        serialization.load_pem_private_key(
            (world["keys"] / "mallory.pem").read_bytes(), password=PASS.encode()
        )
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    own = tmp_path / "own.yaml"  # mallory's own registry: claims to be Dana
    own.write_text(
        yaml.safe_dump(
            {
                "roles": {"release-manager": {"meanings": [A.PROMOTE], "environments": ["prod"]}},
                "approvers": [
                    {"name": "Dana Release", "role": "release-manager", "public_key": mallory_pub.decode()}
                ],
            }
        )
    )
    forged = A.approve(
        awaiting,
        meaning=A.PROMOTE,
        key=world["keys"] / "mallory.pem",
        registry=A.load_registry(own),
        ask_passphrase=lambda _p: PASS,
    )
    try:
        _refused(world, awaiting, "not in the approvers registry")
    finally:
        forged.unlink()


def test_promotion_refuses_an_approval_of_another_bundle(world, awaiting, tmp_path) -> None:
    staging = tmp_path / "other"
    (staging / "data").mkdir(parents=True)
    (staging / "data" / "release.json").write_text(json.dumps(A.read_release(awaiting)))
    other = evidence.seal(
        staging,
        world["archive"],
        runbook="03-blue-green-drill",
        run_id="other0000001",
        started=datetime.now(UTC),
        verdict={"verdict": "PASSED", "checks": []},
    )
    good_elsewhere = A.approve(
        other,
        meaning=A.PROMOTE,
        key=world["keys"] / "dana.pem",
        registry=world["registry"],
        ask_passphrase=lambda _p: PASS,
    )
    target = A.approvals_dir(world["archive"], awaiting.relative_to(world["archive"]).as_posix())
    target.mkdir(parents=True, exist_ok=True)
    copied = target / good_elsewhere.name
    shutil.copy(good_elsewhere, copied)
    try:
        _refused(world, awaiting, "approves another bundle")
    finally:
        copied.unlink()


def test_promotion_with_a_valid_approval_promotes_and_shows_the_signature(world, awaiting) -> None:
    asked: list[str] = []
    A.approve(
        awaiting,
        meaning=A.PROMOTE,
        key=world["keys"] / "dana.pem",
        registry=world["registry"],
        ask_passphrase=lambda p: asked.append(p) or PASS,
    )
    assert len(asked) == 1
    proc = _promote(world, awaiting)
    assert proc.returncode == 0, _explain(proc)
    bundle = Path(next(line for line in proc.stdout.splitlines() if line.startswith("bundle: "))[8:])
    verdict = json.loads((bundle / "verdict.json").read_text())
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["drill outcome"]["measured"] == "PROMOTED"
    assert checks["failed user requests around promotion"]["passed"]
    html = (bundle / "notebook.html").read_text()
    summary = (bundle / "SUMMARY.md").read_text()
    for text in (html, summary):
        assert "Signed by Dana Release (release-manager) on 20" in text
        assert "UTC, meaning: approved for promotion" in text
    assert list((bundle / "data" / "approvals").glob("*.approval.json"))
    verify = _clinops(world, "evidence", "verify", str(world["archive"]))
    assert verify.returncode == 0, _explain(verify)
