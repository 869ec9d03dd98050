"""Verifying bundles and archives (hashes, chain links, signatures) and listing the runs they hold.

``clinops evidence verify PATH`` names every altered, missing or unexpected file and every broken
chain link; nothing here writes to the archive.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..exceptions import ConfigError, EvidenceError, VerificationError
from . import attest
from .manifest import (
    CHAIN_FILE,
    MANIFEST,
    bundle_files,
    read_chain,
    sha256_file,
)
from .seal import (
    ATTESTATION_FILES,
    ENVELOPE,
    PUBLIC_KEY,
    STATEMENT_SIGNED,
    STATEMENT_UNSIGNED,
)

__all__ = ["VerifyReport", "list_from_cli", "list_runs", "verify", "verify_archive", "verify_bundle", "verify_from_cli"]


# -- verification -----------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """What was checked and every problem found (empty = intact)."""

    bundles: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _load_json(path: Path, label: str, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{label}: missing")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{label}: not valid JSON ({e})")
    return None


def _verify_signature(
    bundle: Path, label: str, manifest: dict[str, Any], public_key: bytes | None, problems: list[str]
) -> None:
    mode = manifest.get("signature")
    if mode == "none":
        if (bundle / ENVELOPE).exists() or (bundle / STATEMENT_SIGNED).exists():
            problems.append(f"{label}: manifest says unsigned but a signed attestation is present")
        if public_key is not None:
            problems.append(f"{label}: bundle is UNSIGNED but a public key was given")
        return
    if mode != "ed25519-dsse":
        problems.append(f"{label}: unknown signature mode {mode!r} in manifest")
        return
    envelope = _load_json(bundle / ENVELOPE, f"{label}/{ENVELOPE}", problems)
    if envelope is None:
        return
    try:
        embedded = (bundle / PUBLIC_KEY).read_bytes()
    except FileNotFoundError:
        problems.append(f"{label}/{PUBLIC_KEY}: missing")
        return
    if public_key is not None and embedded.strip() != public_key.strip():
        problems.append(f"{label}: signed with a different key than the given public key")
    key_bytes = public_key if public_key is not None else embedded
    if attest.keyid(embedded) != manifest.get("public_key_sha256"):
        problems.append(f"{label}/{PUBLIC_KEY}: does not match the key id in the manifest")
    try:
        key = attest.load_public_key(key_bytes, f"{label} public key")
        payload = attest.verify_envelope(envelope, key)
    except VerificationError as e:
        problems.extend(e.problems)
        return
    except ValueError as e:
        problems.append(f"{label}/{ENVELOPE}: signature invalid: {e}")
        return
    statement = bundle / STATEMENT_SIGNED
    if statement.exists() and payload != statement.read_bytes():
        problems.append(f"{label}/{ENVELOPE}: signed payload differs from {STATEMENT_SIGNED}")


def _verify_statement(bundle: Path, label: str, manifest: dict[str, Any], problems: list[str]) -> None:
    name = STATEMENT_UNSIGNED if manifest.get("signature") == "none" else STATEMENT_SIGNED
    statement = _load_json(bundle / name, f"{label}/{name}", problems)
    if statement is None:
        return
    if (
        statement.get("_type") != attest.STATEMENT_TYPE
        or statement.get("predicateType") != attest.PREDICATE_TYPE
    ):
        problems.append(f"{label}/{name}: not an in-toto test-result Statement v1")
    subjects = {s.get("name"): s.get("digest", {}).get("sha256") for s in statement.get("subject", [])}
    expected = {k: v for k, v in manifest.get("files", {}).items() if k not in ATTESTATION_FILES}
    for rel in sorted(set(subjects) | set(expected)):
        if subjects.get(rel) != expected.get(rel):
            problems.append(f"{label}/{rel}: manifest and attestation subject disagree")
    if statement.get("predicate", {}).get("result") != manifest.get("verdict"):
        problems.append(f"{label}: verdict in manifest differs from the attestation's result")


def verify_bundle(bundle: Path, *, public_key: bytes | None = None, label: str | None = None) -> list[str]:
    """Problems of one bundle: altered/missing/unexpected files, attestation and signature."""
    label = label or bundle.name
    problems: list[str] = []
    manifest = _load_json(bundle / MANIFEST, f"{label}/{MANIFEST}", problems)
    if not isinstance(manifest, dict):
        return problems or [f"{label}/{MANIFEST}: not a JSON object"]
    recorded: dict[str, str] = manifest.get("files", {})
    actual = bundle_files(bundle)
    for rel in sorted(set(recorded) | set(actual)):
        if rel not in actual:
            problems.append(f"{label}/{rel}: missing (listed in the manifest)")
        elif rel not in recorded:
            problems.append(f"{label}/{rel}: unexpected file (not in the manifest)")
        elif actual[rel] != recorded[rel]:
            problems.append(
                f"{label}/{rel}: altered (sha256 {actual[rel][:12]}..., "
                f"manifest says {recorded[rel][:12]}...)"
            )
    _verify_statement(bundle, label, manifest, problems)
    _verify_signature(bundle, label, manifest, public_key, problems)
    return problems


def _bundles_on_disk(archive: Path) -> list[str]:
    return sorted(p.parent.relative_to(archive).as_posix() for p in archive.glob(f"*/*/{MANIFEST}"))


def verify_archive(archive: Path, *, public_key: bytes | None = None) -> VerifyReport:
    """Every bundle plus the chain: links, order, missing and unexpected bundles."""
    report = VerifyReport()
    try:
        chain = read_chain(archive)
    except EvidenceError as e:
        report.problems.append(str(e))
        return report
    if not (archive / CHAIN_FILE).exists():
        report.problems.append(f"{archive / CHAIN_FILE}: missing (not an evidence archive?)")
    previous = None
    listed = set()
    for i, entry in enumerate(chain):
        rel = entry.get("bundle", f"<entry {i}>")
        listed.add(rel)
        where = f"chain entry {i} ({rel})"
        if entry.get("sequence") != i:
            report.problems.append(f"{where}: sequence {entry.get('sequence')} out of order (expected {i})")
        if entry.get("previous_manifest_sha256") != previous:
            report.problems.append(f"{where}: broken link: does not point to the previous entry's manifest")
        previous = entry.get("manifest_sha256")
        bundle = archive / rel
        if not (bundle / MANIFEST).exists():
            report.problems.append(f"{rel}: bundle missing (listed in the chain as entry {i})")
            continue
        report.bundles += 1
        if sha256_file(bundle / MANIFEST) != entry.get("manifest_sha256"):
            report.problems.append(f"{rel}/{MANIFEST}: altered: its hash differs from chain entry {i}")
        manifest = _load_json(bundle / MANIFEST, f"{rel}/{MANIFEST}", [])
        if isinstance(manifest, dict):
            if manifest.get("bundle") != rel:
                report.problems.append(
                    f"{rel}: moved or renamed: its manifest names it {manifest.get('bundle')!r}"
                )
            if manifest.get("sequence") != i:
                report.problems.append(
                    f"{rel}: reordered: manifest sequence {manifest.get('sequence')}, chain position {i}"
                )
            if manifest.get("previous_manifest_sha256") != entry.get("previous_manifest_sha256"):
                report.problems.append(f"{rel}: broken link: manifest's previous hash differs from the chain")
        report.problems.extend(verify_bundle(bundle, public_key=public_key, label=rel))
    for rel in _bundles_on_disk(archive):
        if rel not in listed:
            report.problems.append(f"{rel}: unexpected bundle (not in {CHAIN_FILE})")
    return report


def _archive_of(bundle: Path) -> Path | None:
    candidate = bundle.parent.parent
    return candidate if (candidate / CHAIN_FILE).exists() else None


def verify(path: Path, *, public_key: bytes | None = None) -> VerifyReport:
    """Verify a bundle (with its chain entry when it sits in an archive) or a whole archive."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"evidence path {path} does not exist")
    if (path / MANIFEST).exists():
        report = VerifyReport(bundles=1, problems=verify_bundle(path, public_key=public_key))
        archive = _archive_of(path)
        if archive is not None:
            rel = path.resolve().relative_to(archive.resolve()).as_posix()
            entries = [e for e in read_chain(archive) if e.get("bundle") == rel]
            if not entries:
                report.problems.append(f"{rel}: not in the archive's {CHAIN_FILE}")
            elif entries[-1].get("manifest_sha256") != sha256_file(path / MANIFEST):
                report.problems.append(f"{rel}/{MANIFEST}: altered: its hash differs from the chain entry")
        return report
    if (path / CHAIN_FILE).exists() or _bundles_on_disk(path):
        return verify_archive(path, public_key=public_key)
    raise ConfigError(
        f"{path} is neither an evidence bundle (no {MANIFEST}) nor an archive (no {CHAIN_FILE})"
    )


def verify_from_cli(args: argparse.Namespace) -> int:
    """``clinops evidence verify PATH [--public-key PEM]``: 0 intact, 1 with each problem named."""
    public_key = None
    if getattr(args, "public_key", None):
        try:
            public_key = Path(args.public_key).read_bytes()
        except OSError as e:
            raise ConfigError(f"--public-key {args.public_key}: cannot be read ({e})") from e
    report = verify(Path(args.path), public_key=public_key)
    if report.ok:
        print(f"OK: {report.bundles} bundle(s) intact in {args.path}")
        return 0
    for problem in report.problems:
        print(f"FAIL: {problem}")
    print(f"{len(report.problems)} problem(s) in {args.path}")
    return 1


# -- listing ------------------------------------------------------------------------------------
def list_runs(archive: Path) -> list[dict[str, Any]]:
    """One dict per bundle (chain order, then any unchained): runbook, time, target, verdict, path."""
    order = {e.get("bundle"): i for i, e in enumerate(read_chain(archive))} if archive.exists() else {}
    rows: list[dict[str, Any]] = []
    for rel in _bundles_on_disk(archive) if archive.exists() else []:
        bundle = archive / rel
        problems: list[str] = []
        record = _load_json(bundle / "run-record.json", rel, problems) or {}
        verdict = _load_json(bundle / "verdict.json", rel, problems) or {}
        rows.append(
            {
                "runbook": record.get("runbook", rel.split("/")[0]),
                "started_utc": record.get("started_utc", "?"),
                "target": record.get("target", "?"),
                "verdict": verdict.get("verdict", "?"),
                "path": rel,
                "_order": order.get(rel, len(order) + len(rows)),
            }
        )
    rows.sort(key=lambda r: r["_order"])
    for r in rows:
        del r["_order"]
    return rows


def list_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops evidence list [PATH]``: one line per run."""
    archive = Path(args.path) if getattr(args, "path", None) else settings.evidence_dir
    rows = list_runs(archive)
    if not rows:
        print(f"no evidence bundles in {archive}")
        return 0
    for r in rows:
        print(f"{r['runbook']:<28} {r['started_utc']:<25} {r['target']:<10} {r['verdict']:<7} {r['path']}")
    return 0
