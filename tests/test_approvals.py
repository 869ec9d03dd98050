"""Signed approvals: registry, meanings, binding to one bundle and release, verification.

Keys are real Ed25519 keys made here (PEM, encrypted with a passphrase); the passphrase
prompt is replaced by a function that records it was asked (getpass needs a terminal).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinops_lib import evidence
from clinops_lib.evidence import approvals as A
from clinops_lib.exceptions import ConfigError, VerificationError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
PASS = "correct horse battery staple"


def _keypair(path: Path, passphrase: str | None = PASS) -> bytes:
    key = Ed25519PrivateKey.generate()
    enc = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _registry_file(path: Path, people: list[tuple[str, str, bytes]]) -> Path:
    import yaml

    doc = {
        "roles": {
            "release-manager": {
                "meanings": ["reviewed", "approved for promotion", "rejected"],
                "environments": ["staging", "prod"],
            },
            "qa-reviewer": {"meanings": ["reviewed", "rejected"], "environments": ["dev", "staging", "prod"]},
        },
        "approvers": [{"name": n, "role": r, "public_key": k.decode()} for n, r, k in people],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _seal(archive: Path, scratch: Path, i: int, release: dict | None) -> Path:
    staging = scratch / f"staging-{i}"
    (staging / "data").mkdir(parents=True)
    (staging / "notebook.html").write_text(f"<html>{i}</html>")
    if release is not None:
        (staging / "data" / "release.json").write_text(json.dumps(release))
    return evidence.seal(
        staging,
        archive,
        runbook="03-blue-green-drill",
        run_id=f"bg{i:03d}",
        started=T0 + timedelta(minutes=i),
        verdict={"verdict": "AWAITING_APPROVAL", "checks": []},
    )


RELEASE = {
    "service": "model-serving",
    "stable_version": "v1",
    "candidate_version": "v2",
    "environment": "prod",
}


@pytest.fixture
def world(tmp_path: Path) -> dict:
    keys = tmp_path / "keys"
    keys.mkdir()
    rm = _keypair(keys / "dana.pem")
    qa = _keypair(keys / "quinn.pem")
    _keypair(keys / "mallory.pem")
    registry_path = _registry_file(
        tmp_path / "approvers.yaml",
        [("Dana Release", "release-manager", rm), ("Quinn QA", "qa-reviewer", qa)],
    )
    archive = tmp_path / "evidence"
    b1 = _seal(archive, tmp_path, 1, RELEASE)
    b2 = _seal(archive, tmp_path, 2, {**RELEASE, "candidate_version": "v3"})
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return PASS

    return {
        "keys": keys,
        "registry": A.load_registry(registry_path),
        "registry_path": registry_path,
        "archive": archive,
        "b1": b1,
        "b2": b2,
        "ask": ask,
        "asked": asked,
    }


def _approve(w: dict, bundle: Path, who: str = "dana", meaning: str = "approved for promotion") -> Path:
    return A.approve(
        bundle, meaning=meaning, key=w["keys"] / f"{who}.pem", registry=w["registry"], ask_passphrase=w["ask"]
    )


def test_valid_approval_promotes_and_shows_the_manifestation(world) -> None:
    path = _approve(world, world["b1"])
    assert world["asked"] == [f"passphrase for {world['keys'] / 'dana.pem'}: "]
    assert PASS.encode() not in path.read_bytes()
    approval = A.require_promotion_approval(world["b1"], world["registry"])
    assert (approval.name, approval.role, approval.meaning) == ("Dana Release", "release-manager", A.PROMOTE)
    assert approval.release == RELEASE
    text = approval.manifestation
    assert (
        text.startswith("Signed by Dana Release (release-manager) on 20")
        and "UTC, meaning: approved for promotion" in text
    )
    assert evidence.verify(world["archive"], registry=world["registry"]).problems == []


def test_no_approval_refuses(world) -> None:
    with pytest.raises(ConfigError, match="no valid approval for promotion .none filed"):
        A.require_promotion_approval(world["b1"], world["registry"])


def test_key_not_in_the_registry_is_refused_when_signing_and_when_verifying(world, tmp_path) -> None:
    with pytest.raises(ConfigError, match="not in the approvers registry"):
        _approve(world, world["b1"], who="mallory")
    # mallory forges the file directly (signing with her key, claiming to be Dana)
    everyone = A.load_registry(
        _registry_file(
            tmp_path / "forged.yaml", [("Dana Release", "release-manager", _pub(world, "mallory"))]
        )
    )
    forged = A.approve(
        world["b1"],
        meaning=A.PROMOTE,
        key=world["keys"] / "mallory.pem",
        registry=everyone,
        ask_passphrase=world["ask"],
    )
    with pytest.raises(ConfigError, match="not in the approvers registry"):
        A.require_promotion_approval(world["b1"], world["registry"])
    problems = evidence.verify(world["archive"], registry=world["registry"]).problems
    assert any(forged.name in p and "not in the approvers registry" in p for p in problems), problems


def _pub(w: dict, who: str) -> bytes:
    key = serialization.load_pem_private_key((w["keys"] / f"{who}.pem").read_bytes(), password=PASS.encode())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_role_that_may_not_promote_is_refused(world) -> None:
    with pytest.raises(ConfigError, match="role 'qa-reviewer' may not sign 'approved for promotion'"):
        _approve(world, world["b1"], who="quinn")
    _approve(world, world["b1"], who="quinn", meaning="reviewed")  # allowed: not a promotion
    with pytest.raises(ConfigError, match="no valid approval for promotion"):
        A.require_promotion_approval(world["b1"], world["registry"])


def test_approval_of_another_bundle_is_refused(world) -> None:
    path = _approve(world, world["b2"])
    target = A.approvals_dir(world["archive"], "03-blue-green-drill/" + world["b1"].name)
    target.mkdir(parents=True)
    shutil.copy(path, target / path.name)
    with pytest.raises(ConfigError, match="approves another bundle"):
        A.require_promotion_approval(world["b1"], world["registry"])
    problems = evidence.verify(world["archive"], registry=world["registry"]).problems
    assert any(world["b1"].name in p and "approves another bundle" in p for p in problems), problems


def test_rejection_wins(world) -> None:
    _approve(world, world["b1"])
    _approve(world, world["b1"], who="quinn", meaning="rejected")
    with pytest.raises(ConfigError, match="rejected: Signed by Quinn QA"):
        A.require_promotion_approval(world["b1"], world["registry"])


def test_meaning_outside_the_fixed_list_is_refused(world) -> None:
    with pytest.raises(ConfigError, match="must be one of"):
        _approve(world, world["b1"], meaning="looks fine to me")


def test_wrong_passphrase_is_refused(world) -> None:
    with pytest.raises(ConfigError, match="dana.pem"):
        A.approve(
            world["b1"],
            meaning=A.PROMOTE,
            key=world["keys"] / "dana.pem",
            registry=world["registry"],
            ask_passphrase=lambda _p: "wrong",
        )


def test_edited_approval_does_not_verify(world) -> None:
    import base64

    path = _approve(world, world["b1"])
    env = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["release"]["candidate_version"] = "v9"
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(env))
    with pytest.raises(VerificationError, match="not in the approvers registry"):
        A.verify_approval(path.read_bytes(), world["registry"], bundle=world["b1"])


def test_bundle_without_a_release_does_not_await_approval(world, tmp_path) -> None:
    b3 = _seal(world["archive"], tmp_path, 3, None)
    with pytest.raises(ConfigError, match="does not await an approval"):
        _approve(world, b3)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("approvers: [{name: x, role: boss, public_key: nope}]\nroles: {}", "exactly one PEM"),
        ("roles: {r: {meanings: [fine], environments: [prod]}}", "unknown meaning"),
        ("[1, 2]", "must be a mapping"),
    ],
)
def test_bad_registry_is_a_config_error(tmp_path, doc: str, message: str) -> None:
    (tmp_path / "r.yaml").write_text(doc)
    with pytest.raises(ConfigError, match=message):
        A.load_registry(tmp_path / "r.yaml")


def test_committed_registry_is_valid() -> None:
    from clinops_lib.config import project_root

    registry = A.load_registry(project_root() / "compliance" / "approvers.yaml")
    assert set(registry.roles) >= {"release-manager"}
    assert A.PROMOTE in registry.roles["release-manager"].meanings


def test_unencrypted_approver_key_is_refused(world, tmp_path) -> None:
    pub = _keypair(world["keys"] / "plain.pem", passphrase=None)
    registry = A.load_registry(_registry_file(tmp_path / "p.yaml", [("Pat Plain", "release-manager", pub)]))
    with pytest.raises(ConfigError, match="not encrypted"):
        A.approve(
            world["b1"],
            meaning=A.PROMOTE,
            key=world["keys"] / "plain.pem",
            registry=registry,
            ask_passphrase=world["ask"],
        )
