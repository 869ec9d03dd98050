"""Sealing, chaining and verification of evidence bundles, and every kind of tampering.

Bundles here are sealed from small staging directories (no notebook run needed): what is
under test is the manifest, the chain, the attestation and the signature. Runs that produce
real bundles are in test_runner.py.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinops_lib import evidence
from clinops_lib.cli import main
from clinops_lib.config import Settings
from clinops_lib.evidence.manifest import CHAIN_FILE, read_chain, sha256_file
from clinops_lib.exceptions import ConfigError

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _key(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _public(private: Path, out: Path) -> Path:
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    out.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return out


def _seal_one(
    archive: Path, scratch: Path, i: int, signing_key: Path | None = None, verdict: str = "PASSED"
) -> Path:
    staging = scratch / f"staging-{i}"
    (staging / "data").mkdir(parents=True)
    (staging / "notebook.ipynb").write_text(json.dumps({"cells": [], "i": i}))
    (staging / "notebook.html").write_text(f"<html>run {i}</html>")
    (staging / "data" / "table.csv").write_text("a,b\n1,2\n")
    (staging / "run-record.json").write_text(
        json.dumps({"runbook": "demo", "target": "local", "started_utc": f"2025-01-02T03:04:0{i}Z"})
    )
    checks = [{"name": "latency", "measured": 1, "limit": 2, "op": "<=", "passed": verdict == "PASSED"}]
    v = {"verdict": verdict, "checks": checks}
    (staging / "verdict.json").write_text(json.dumps(v))
    return evidence.seal(
        staging,
        archive,
        runbook="demo",
        run_id=f"run{i:03d}",
        started=T0 + timedelta(seconds=i),
        verdict=v,
        signing_key=signing_key,
    )


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[Path]]:
    """An archive of three unsigned bundles."""
    root = tmp_path / "evidence"
    bundles = [_seal_one(root, tmp_path, i) for i in range(3)]
    return root, bundles


@pytest.fixture
def signed_archive(tmp_path: Path) -> tuple[Path, list[Path], Path]:
    key = _key(tmp_path / "signing.pem")
    root = tmp_path / "signed"
    bundles = [_seal_one(root, tmp_path, i, signing_key=key) for i in range(2)]
    return root, bundles, key


def _problems(path: Path, public_key: bytes | None = None) -> list[str]:
    return evidence.verify(path, public_key=public_key).problems


def test_sealed_archive_verifies_and_chains(archive) -> None:
    root, bundles = archive
    assert _problems(root) == []
    chain = read_chain(root)
    assert [e["sequence"] for e in chain] == [0, 1, 2]
    assert chain[0]["previous_manifest_sha256"] is None
    for prev, entry, bundle in zip(chain, chain[1:], bundles[1:], strict=False):
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert (
            manifest["previous_manifest_sha256"]
            == prev["manifest_sha256"]
            == entry["previous_manifest_sha256"]
        )
    assert bundles[0].name == "20250102T030405Z-run000"
    assert not any(p.name.endswith(".partial") for p in root.rglob("*"))


def test_unsigned_bundle_says_so(archive) -> None:
    _, bundles = archive
    manifest = json.loads((bundles[0] / "manifest.json").read_text())
    assert manifest["signature"] == "none"
    statement = json.loads((bundles[0] / evidence.STATEMENT_UNSIGNED).read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    assert statement["predicate"]["result"] == "PASSED"
    assert statement["predicate"]["passedTests"] == ["latency"]
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects["data/table.csv"] == sha256_file(bundles[0] / "data" / "table.csv")
    assert "manifest.json" not in subjects
    assert not (bundles[0] / evidence.ENVELOPE).exists()


def test_one_changed_byte_is_named(archive) -> None:
    root, bundles = archive
    path = bundles[1] / "notebook.html"
    data = bytearray(path.read_bytes())
    data[3] ^= 1
    path.write_bytes(bytes(data))
    problems = _problems(root)
    assert any("demo/20250102T030406Z-run001/notebook.html: altered" in p for p in problems), problems
    assert _problems(bundles[0]) == []  # other bundles are untouched
    assert main(["evidence", "verify", str(bundles[1])]) == 1


def test_deleted_file_is_named(archive) -> None:
    root, bundles = archive
    (bundles[0] / "data" / "table.csv").unlink()
    assert any("run000/data/table.csv: missing" in p for p in _problems(root))


def test_added_file_is_named(archive) -> None:
    root, bundles = archive
    (bundles[2] / "data" / "extra.csv").write_text("x\n")
    assert any("run002/data/extra.csv: unexpected file" in p for p in _problems(root))


def test_manifest_edited_and_rehashed_breaks_the_chain(archive) -> None:
    root, bundles = archive
    target = bundles[1]
    (target / "notebook.html").write_text("<html>a nicer story</html>")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["notebook.html"] = sha256_file(target / "notebook.html")
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    problems = _problems(root)
    assert not any("notebook.html: altered" in p for p in problems)  # the file now matches its manifest...
    assert any("run001/manifest.json: altered: its hash differs from chain entry 1" in p for p in problems)
    assert any("run001/notebook.html: manifest and attestation subject disagree" in p for p in problems)
    assert any("manifest.json: altered" in p for p in _problems(target))  # also seen bundle-alone


def test_reordered_chain_is_named(archive) -> None:
    root, _ = archive
    lines = (root / CHAIN_FILE).read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (root / CHAIN_FILE).write_text("\n".join(lines) + "\n")
    problems = _problems(root)
    assert any("chain entry 0" in p and "out of order" in p for p in problems), problems
    assert any("broken link" in p for p in problems)
    assert any("run001: reordered" in p for p in problems)


def test_swapped_bundle_directories_are_named(archive) -> None:
    root, bundles = archive
    tmp = bundles[0].with_name("swap")
    bundles[0].rename(tmp)
    bundles[1].rename(bundles[0])
    tmp.rename(bundles[1])
    problems = _problems(root)
    assert any("run000: moved or renamed" in p for p in problems), problems


def test_removed_bundle_is_named(archive) -> None:
    root, bundles = archive
    shutil.rmtree(bundles[1])
    problems = _problems(root)
    assert any("run001: bundle missing" in p for p in problems)


def test_unchained_bundle_is_named(archive, tmp_path) -> None:
    root, bundles = archive
    shutil.copytree(bundles[0], root / "demo" / "20250102T999999Z-forged")
    assert any("forged: unexpected bundle" in p for p in _problems(root))


def test_signed_bundles_verify_with_their_public_key(signed_archive, tmp_path) -> None:
    root, bundles, key = signed_archive
    pub = _public(key, tmp_path / "pub.pem")
    assert _problems(root, pub.read_bytes()) == []
    assert main(["evidence", "verify", str(root), "--public-key", str(pub)]) == 0
    assert (bundles[0] / evidence.STATEMENT_SIGNED).exists()
    envelope = json.loads((bundles[0] / evidence.ENVELOPE).read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    other = _public(_key(tmp_path / "other.pem"), tmp_path / "other.pub.pem")
    assert any("different key" in p for p in _problems(root, other.read_bytes()))


def test_swapped_signature_is_named(signed_archive) -> None:
    root, bundles, _ = signed_archive
    shutil.copyfile(bundles[0] / evidence.ENVELOPE, bundles[1] / evidence.ENVELOPE)
    problems = _problems(root)
    assert any("run001/attestation.dsse.json: altered" in p for p in problems), problems
    assert any("run001/attestation.dsse.json: signed payload differs" in p for p in problems)


def test_signature_by_another_key_is_named(signed_archive, tmp_path) -> None:
    """Attacker re-signs an edited statement with their own key and swaps in their public key."""
    from clinops_lib.evidence import attest

    root, bundles, _ = signed_archive
    forged = attest.load_private_key(_key(tmp_path / "forger.pem"))
    b = bundles[0]
    statement = (b / evidence.STATEMENT_SIGNED).read_bytes()
    (b / evidence.ENVELOPE).write_bytes(attest.canonical(attest.sign_envelope(statement, forged)))
    (b / evidence.PUBLIC_KEY).write_bytes(attest.public_key_pem(forged))
    problems = _problems(root)
    assert any("signing-key.pub.pem: altered" in p for p in problems)
    assert any("does not match the key id" in p for p in problems)


def test_unsigned_bundle_fails_when_a_key_is_required(archive, signed_archive, tmp_path) -> None:
    root, _ = archive
    pub = _public(signed_archive[2], tmp_path / "pub.pem")
    assert any("UNSIGNED" in p for p in _problems(root, pub.read_bytes()))


def test_bad_signing_key_is_a_config_error(tmp_path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="bad.pem"):
        _seal_one(tmp_path / "ev", tmp_path, 0, signing_key=tmp_path / "bad.pem")


def _seal_in_process(args: tuple[str, str, int]) -> str:
    archive, scratch, i = args
    return str(_seal_one(Path(archive), Path(scratch), i))


def test_concurrent_seals_do_not_fork_the_chain(tmp_path) -> None:
    root = tmp_path / "evidence"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        pool.map(_seal_in_process, [(str(root), str(tmp_path), i) for i in range(8)])
    chain = read_chain(root)
    assert len(chain) == 8
    assert len({e["previous_manifest_sha256"] for e in chain}) == 8  # every link unique: no fork
    assert _problems(root) == []


def test_list_prints_one_line_per_run(archive, capsys) -> None:
    root, _ = archive
    rows = evidence.list_runs(root)
    assert [r["path"].split("-")[-1] for r in rows] == ["run000", "run001", "run002"]
    assert {(r["runbook"], r["target"], r["verdict"]) for r in rows} == {("demo", "local", "PASSED")}
    assert main(["evidence", "list", str(root)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all("demo" in line and "PASSED" in line for line in out)


def test_verify_of_a_path_that_is_not_evidence_is_bad_input(tmp_path) -> None:
    assert main(["evidence", "verify", str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["evidence", "verify", str(tmp_path / "empty")]) == 2


# -- attacks on the chain: the attacker rewrites everything that is not signed ---------------------------
@pytest.fixture
def signed3(tmp_path: Path) -> tuple[Path, list[Path], Path, bytes]:
    """Three bundles signed with one key, and that key's public PEM."""
    key = _key(tmp_path / "signing.pem")
    root = tmp_path / "signed3"
    bundles = [_seal_one(root, tmp_path, i, signing_key=key) for i in range(3)]
    return root, bundles, key, _public(key, tmp_path / "signing.pub.pem").read_bytes()


def _relink(root: Path, order: list[Path], edit: dict[str, dict] | None = None) -> None:
    """Rewrite every manifest's position and the chain for ``order``: what a careful attacker
    with write access does after deleting or reordering bundles (hashes all recomputed)."""
    previous = None
    lines = []
    for seq, bundle in enumerate(order):
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["sequence"] = seq
        manifest["previous_manifest_sha256"] = previous
        manifest["bundle"] = bundle.relative_to(root).as_posix()
        manifest.update((edit or {}).get(bundle.name, {}))
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        digest = sha256_file(bundle / "manifest.json")
        lines.append(
            json.dumps(
                {
                    "sequence": seq,
                    "bundle": manifest["bundle"],
                    "manifest_sha256": digest,
                    "previous_manifest_sha256": previous,
                    "sealed_utc": manifest["sealed_utc"],
                },
                sort_keys=True,
            )
        )
        previous = digest
    (root / CHAIN_FILE).write_text("\n".join(lines) + "\n")


def _all_problems(root: Path, pub: bytes) -> tuple[list[str], list[str]]:
    """Problems without configured keys, and with the expected key configured."""
    return _problems(root), evidence.verify(root, expected_keys=[pub]).problems


def _named(problems: list[str], bundle: Path, *words: str) -> bool:
    return any(bundle.name in p and all(w in p for w in words) for p in problems)


def test_middle_deletion_with_relinking_fails_with_and_without_keys(signed3) -> None:
    root, bundles, _, pub = signed3
    shutil.rmtree(bundles[1])
    _relink(root, [bundles[0], bundles[2]])
    for problems in _all_problems(root, pub):
        assert _named(problems, bundles[2], "sequence", "signed statement"), problems
        assert _named(problems, bundles[2], "previous_manifest_sha256"), problems
    assert main(["evidence", "verify", str(root)]) == 1


def test_tail_truncation_is_caught_by_the_checkpoint(signed3) -> None:
    root, bundles, _, pub = signed3
    shutil.rmtree(bundles[2])
    lines = (root / CHAIN_FILE).read_text().splitlines()
    (root / CHAIN_FILE).write_text("\n".join(lines[:2]) + "\n")
    for problems in _all_problems(root, pub):
        assert _named(problems, bundles[2], "tail truncated"), problems
    (root / "checkpoint.json").unlink()  # ... and deleting the checkpoint too is named
    for problems in _all_problems(root, pub):
        assert _named(problems, bundles[1], "checkpoint.json: missing"), problems


def test_tail_truncation_of_an_unsigned_archive_is_caught_locally(archive) -> None:
    root, bundles = archive
    shutil.rmtree(bundles[2])
    lines = (root / CHAIN_FILE).read_text().splitlines()
    (root / CHAIN_FILE).write_text("\n".join(lines[:2]) + "\n")
    assert _named(_problems(root), bundles[2], "tail truncated")


def test_reorder_with_relinking_fails(signed3) -> None:
    root, bundles, _, pub = signed3
    _relink(root, [bundles[0], bundles[2], bundles[1]])
    for problems in _all_problems(root, pub):
        assert _named(problems, bundles[2], "sequence 1", "signed statement's 2"), problems
        assert _named(problems, bundles[1], "sequence 2", "signed statement's 1"), problems


def test_backdating_fails(signed3) -> None:
    root, bundles, _, pub = signed3
    _relink(root, bundles, edit={bundles[1].name: {"sealed_utc": "2020-01-01T00:00:00.000Z"}})
    for problems in _all_problems(root, pub):
        assert _named(problems, bundles[1], "sealed_utc", "backdated"), problems
    # moving the bundle to an earlier-looking folder name breaks the signed path as well
    earlier = bundles[1].with_name("20200101T000000Z-run001")
    bundles[1].rename(earlier)
    _relink(root, [bundles[0], earlier, bundles[2]])
    for problems in _all_problems(root, pub):
        assert _named(problems, earlier, "manifest bundle", "signed statement"), problems


def _resign(bundle: Path, forged_key: Path) -> None:
    from clinops_lib.evidence import attest as _attest

    forged = _attest.load_private_key(forged_key)
    statement = (bundle / evidence.STATEMENT_SIGNED).read_bytes()
    pub = _attest.public_key_pem(forged)
    (bundle / evidence.ENVELOPE).write_bytes(_attest.canonical(_attest.sign_envelope(statement, forged)))
    (bundle / evidence.PUBLIC_KEY).write_bytes(pub)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["public_key_sha256"] = _attest.keyid(pub)
    for name in (evidence.ENVELOPE, evidence.PUBLIC_KEY):
        manifest["files"][name] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_resigning_with_another_key_fails_without_a_flag(signed3, tmp_path) -> None:
    root, bundles, _, pub = signed3
    forger = _key(tmp_path / "forger.pem")
    _resign(bundles[1], forger)
    _relink(root, bundles)
    without, with_keys = _all_problems(root, pub)
    assert _named(without, bundles[1], "different key than earlier bundles"), without
    assert _named(with_keys, bundles[1], "different key", "expected key"), with_keys
    # the configured key comes from CLINOPS_VERIFY_KEYS through Settings, no flag needed
    keyfile = tmp_path / "expected.pem"
    keyfile.write_bytes(pub)
    settings_keys = Settings.from_env({"CLINOPS_VERIFY_KEYS": str(keyfile)}).expected_public_keys()
    assert settings_keys == [pub]


def test_resigning_everything_is_caught_only_by_configured_keys(signed3, tmp_path) -> None:
    from clinops_lib.evidence import attest as _attest
    from clinops_lib.evidence.checkpoint import write_checkpoint

    root, bundles, _, pub = signed3
    forger = _key(tmp_path / "forger.pem")
    for b in bundles:
        _resign(b, forger)
    _relink(root, bundles)
    write_checkpoint(root, read_chain(root), _attest.load_private_key(forger))
    without, with_keys = _all_problems(root, pub)
    # one key throughout: without the expected key nothing says "another key" (the stale
    # previous hashes inside the statements are named, a thorough forger would fix those too)
    assert not any("different key" in p or "checkpoint.json" in p for p in without), without
    for b in bundles:
        assert _named(with_keys, b, "different key"), with_keys
    assert any("checkpoint.json: signature does not verify" in p for p in with_keys)


def test_downgrade_to_unsigned_fails(signed3) -> None:
    root, bundles, _, pub = signed3
    b = bundles[1]
    (b / evidence.ENVELOPE).unlink()
    (b / evidence.PUBLIC_KEY).unlink()
    (b / evidence.STATEMENT_SIGNED).rename(b / evidence.STATEMENT_UNSIGNED)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["signature"] = "none"
    del manifest["public_key_sha256"]
    manifest["files"] = {
        k: v for k, v in manifest["files"].items() if k not in (evidence.ENVELOPE, evidence.PUBLIC_KEY)
    }
    manifest["files"][evidence.STATEMENT_UNSIGNED] = manifest["files"].pop(evidence.STATEMENT_SIGNED)
    (b / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _relink(root, bundles)
    without, with_keys = _all_problems(root, pub)
    assert _named(without, b, "UNSIGNED after signed bundles"), without
    assert _named(with_keys, b, "UNSIGNED", "expected key"), with_keys


def test_unsigned_archive_fails_when_keys_are_configured(archive, signed3) -> None:
    root, bundles = archive
    problems = evidence.verify(root, expected_keys=[signed3[3]]).problems
    for b in bundles:
        assert _named(problems, b, "UNSIGNED"), problems


def test_checkpoint_is_signed_and_names_the_head(signed3) -> None:
    from clinops_lib.evidence.checkpoint import read_checkpoint

    root, bundles, _, pub = signed3
    envelope, body = read_checkpoint((root / "checkpoint.json").read_bytes())
    assert body["size"] == 3 and body["head_bundle"] == bundles[2].relative_to(root).as_posix()
    assert envelope["signatures"]
    assert evidence.verify(root, expected_keys=[pub]).problems == []
