"""Verifying bundles and archives (hashes, chain links, signatures, checkpoint, approvals) and
listing the runs they hold; the CLI entry points of ``clinops evidence`` and ``clinops approve``.

``clinops evidence verify PATH`` names every altered, missing or unexpected file and bundle,
every broken chain link, a truncated tail, a bundle signed by a key that is not expected
(``CLINOPS_VERIFY_KEYS``) or not signed at all, and every approval that does not verify;
``--remote`` also compares with the write-once copy. Nothing here writes to the archive.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..exceptions import ConfigError, EvidenceError, VerificationError
from . import attest
from .checkpoint import verify_checkpoint
from .manifest import CHAIN_FILE, MANIFEST, bundle_files, read_chain, sha256_file
from .seal import (
    ATTESTATION_FILES,
    ENVELOPE,
    PUBLIC_KEY,
    STATEMENT_SIGNED,
    STATEMENT_UNSIGNED,
    signed_position,
)

if TYPE_CHECKING:
    from .approvals import Registry

__all__ = [
    "VerifyReport",
    "approve_from_cli",
    "list_from_cli",
    "list_runs",
    "push_from_cli",
    "verify",
    "verify_archive",
    "verify_bundle",
    "verify_from_cli",
]


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


def _keyids(keys: Sequence[bytes]) -> set[str]:
    return {attest.keyid(k) for k in keys}


def _verify_signature(
    bundle: Path, label: str, manifest: dict[str, Any], expected: Sequence[bytes], problems: list[str]
) -> bytes | None:
    """Check the DSSE signature; returns the bundle's public key (None when unsigned or broken).

    With ``expected`` keys configured an UNSIGNED bundle and a bundle signed by any other key
    are problems (a downgrade or a re-signing), without needing a flag.
    """
    mode = manifest.get("signature")
    if mode == "none":
        if (bundle / ENVELOPE).exists() or (bundle / STATEMENT_SIGNED).exists():
            problems.append(f"{label}: manifest says unsigned but a signed attestation is present")
        if expected:
            problems.append(f"{label}: bundle is UNSIGNED but signatures by the expected key(s) are required")
        return None
    if mode != "ed25519-dsse":
        problems.append(f"{label}: unknown signature mode {mode!r} in manifest")
        return None
    envelope = _load_json(bundle / ENVELOPE, f"{label}/{ENVELOPE}", problems)
    if envelope is None:
        return None
    try:
        embedded = (bundle / PUBLIC_KEY).read_bytes()
    except FileNotFoundError:
        problems.append(f"{label}/{PUBLIC_KEY}: missing")
        return None
    if expected and attest.keyid(embedded) not in _keyids(expected):
        problems.append(
            f"{label}: signed with a different key ({attest.keyid(embedded)[:16]}...) "
            "than the expected key(s)"
        )
    if attest.keyid(embedded) != manifest.get("public_key_sha256"):
        problems.append(f"{label}/{PUBLIC_KEY}: does not match the key id in the manifest")
    try:
        key = attest.load_public_key(embedded, f"{label} public key")
        payload = attest.verify_envelope(envelope, key)
    except VerificationError as e:
        problems.extend(e.problems)
        return None
    except ValueError as e:
        problems.append(f"{label}/{ENVELOPE}: signature invalid: {e}")
        return None
    statement = bundle / STATEMENT_SIGNED
    if statement.exists() and payload != statement.read_bytes():
        problems.append(f"{label}/{ENVELOPE}: signed payload differs from {STATEMENT_SIGNED}")
    return embedded


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
    position = signed_position(statement)
    what = "signed statement" if name == STATEMENT_SIGNED else "statement"
    if position is None:
        problems.append(f"{label}: its {what} does not cover its chain position")
        return
    for key in ("sequence", "previous_manifest_sha256", "bundle", "sealed_utc"):
        if manifest.get(key) != position.get(key):
            problems.append(
                f"{label}: manifest {key} {manifest.get(key)!r} differs from the {what}'s "
                f"{position.get(key)!r} (relinked, reordered, moved or backdated)"
            )


def verify_bundle(
    bundle: Path,
    *,
    public_key: bytes | None = None,
    expected_keys: Sequence[bytes] = (),
    label: str | None = None,
) -> list[str]:
    """Problems of one bundle: altered/missing/unexpected files, attestation and signature."""
    return _check_bundle(bundle, _expected(public_key, expected_keys), label or bundle.name)[0]


def _expected(public_key: bytes | None, expected_keys: Sequence[bytes]) -> list[bytes]:
    keys = list(expected_keys)
    if public_key is not None:
        keys += attest.split_pems(public_key) or [public_key]
    return keys


def _check_bundle(bundle: Path, expected: Sequence[bytes], label: str) -> tuple[list[str], bytes | None]:
    problems: list[str] = []
    manifest = _load_json(bundle / MANIFEST, f"{label}/{MANIFEST}", problems)
    if not isinstance(manifest, dict):
        return problems or [f"{label}/{MANIFEST}: not a JSON object"], None
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
    key = _verify_signature(bundle, label, manifest, expected, problems)
    return problems, key


def _bundles_on_disk(archive: Path) -> list[str]:
    return sorted(p.parent.relative_to(archive).as_posix() for p in archive.glob(f"*/*/{MANIFEST}"))


def _verify_approvals(archive: Path, registry: Registry | None) -> list[str]:
    """Every approval filed in the archive, and every copy a run kept in its bundle
    (``data/approvals/``), verifies against the registry and the bundle it approves."""
    from .approvals import APPROVALS_DIR, approved_bundle, verify_approval

    root = archive / APPROVALS_DIR
    filed = sorted(root.rglob("*.approval.json")) if root.is_dir() else []
    kept = sorted(archive.glob("*/*/data/approvals/*.approval.json"))
    if (filed or kept) and registry is None:
        n = len(filed) + len(kept)
        return [f"{n} approval(s) in {archive} but no approvers registry to check them against"]
    problems: list[str] = []
    for path in [*filed, *kept]:
        where = path.relative_to(archive).as_posix()
        data = path.read_bytes()
        if path.is_relative_to(root):
            bundle = archive / path.parent.relative_to(root)
        else:
            bundle = archive / approved_bundle(data)
        if not (bundle / MANIFEST).exists():
            problems.append(
                f"{where}: approves a bundle that is not in the archive ({bundle.relative_to(archive)})"
            )
            continue
        try:
            verify_approval(data, registry, bundle=bundle, where=where)  # type: ignore[arg-type]
        except VerificationError as e:
            problems += e.problems
    return problems


def verify_archive(
    archive: Path,
    *,
    public_key: bytes | None = None,
    expected_keys: Sequence[bytes] = (),
    registry: Registry | None = None,
) -> VerifyReport:
    """Every bundle plus the chain and its checkpoint (links, order, missing, unexpected,
    truncated, downgraded and re-signed bundles) and every approval filed in the archive
    (checked against ``registry``; a library call without one skips them)."""
    expected = _expected(public_key, expected_keys)
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
    signer_keys: list[bytes] = []
    first_signed: str | None = None
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
        problems, key = _check_bundle(bundle, expected, rel)
        report.problems.extend(problems)
        unsigned = isinstance(manifest, dict) and manifest.get("signature") == "none"
        if unsigned and first_signed and not expected:
            report.problems.append(f"{rel}: UNSIGNED after signed bundles (from {first_signed}): downgraded?")
        if key is not None:
            first_signed = first_signed or rel
            if not expected and signer_keys and attest.keyid(key) not in _keyids(signer_keys):
                report.problems.append(
                    f"{rel}: signed with a different key than earlier bundles (configure "
                    "CLINOPS_VERIFY_KEYS with every legitimate key to accept a rotation)"
                )
            signer_keys.append(key)
    for rel in _bundles_on_disk(archive):
        if rel not in listed:
            report.problems.append(f"{rel}: unexpected bundle (not in {CHAIN_FILE})")
    report.problems.extend(
        verify_checkpoint(
            archive, chain, list(expected) or signer_keys, signed_archive=bool(expected or signer_keys)
        )
    )
    report.problems.extend(_verify_approvals(archive, registry))
    return report


def _archive_of(bundle: Path) -> Path | None:
    candidate = bundle.parent.parent
    return candidate if (candidate / CHAIN_FILE).exists() else None


def verify(
    path: Path,
    *,
    public_key: bytes | None = None,
    expected_keys: Sequence[bytes] = (),
    registry: Registry | None = None,
) -> VerifyReport:
    """Verify a bundle (with its chain entry when it sits in an archive) or a whole archive.

    ``expected_keys`` (``Settings.expected_public_keys()``) and ``public_key`` (``--public-key``)
    are the keys signatures must verify with; none given = any embedded key is accepted.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"evidence path {path} does not exist")
    if (path / MANIFEST).exists():
        expected = _expected(public_key, expected_keys)
        report = VerifyReport(bundles=1, problems=_check_bundle(path, expected, path.name)[0])
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
        return verify_archive(path, public_key=public_key, expected_keys=expected_keys, registry=registry)
    raise ConfigError(
        f"{path} is neither an evidence bundle (no {MANIFEST}) nor an archive (no {CHAIN_FILE})"
    )


def verify_from_cli(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``clinops evidence verify PATH [--public-key PEM] [--remote]``: 0 intact, 1 with each
    problem named. The expected keys come from ``CLINOPS_VERIFY_KEYS`` (settings) plus
    ``--public-key``; approvals are checked against the approvers registry; ``--remote`` also
    compares with the write-once bucket (bundles missing on either side, truncated tail)."""
    settings = settings or Settings.from_env()
    public_key = None
    if getattr(args, "public_key", None):
        try:
            public_key = Path(args.public_key).read_bytes()
        except OSError as e:
            raise ConfigError(f"--public-key {args.public_key}: cannot be read ({e})") from e
    registry = None
    if settings.approvers_file.exists():
        from .approvals import load_registry

        registry = load_registry(settings.approvers_file)
    report = verify(
        Path(args.path),
        public_key=public_key,
        expected_keys=settings.expected_public_keys(),
        registry=registry,
    )
    if getattr(args, "remote", False):
        from .remote import compare, remote_from_settings

        remote = remote_from_settings(settings, bucket=args.bucket, prefix=args.prefix or "")
        report.problems.extend(compare(Path(args.path), remote))
    if report.ok:
        print(f"OK: {report.bundles} bundle(s) intact in {args.path}")
        return 0
    for problem in report.problems:
        print(f"FAIL: {problem}")
    print(f"{len(report.problems)} problem(s) in {args.path}")
    return 1


def push_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops evidence push [ARCHIVE]``: upload to the write-once bucket; 1 on a conflict."""
    from .remote import push, remote_from_settings

    archive = Path(args.path) if getattr(args, "path", None) else settings.evidence_dir
    remote = remote_from_settings(settings, bucket=args.bucket, prefix=args.prefix or "")
    print(f"pushing {archive} to s3://{remote.bucket}/{remote.prefix}", file=sys.stderr)
    report = push(archive, remote, progress=lambda m: print(m, file=sys.stderr, flush=True))
    n_up, n_conflicts = len(report.uploaded), len(report.conflicts)
    print(f"{n_up} uploaded, {report.skipped} already there, {n_conflicts} conflict(s)")
    for c in report.conflicts:
        print(f"CONFLICT: {c}")
    return 1 if report.conflicts else 0


def approve_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops approve BUNDLE --meaning M --key PEM``: sign an approval (passphrase asked)."""
    from .approvals import approve, load_registry

    out = approve(
        Path(args.bundle),
        meaning=args.meaning,
        key=Path(args.key),
        registry=load_registry(settings.approvers_file),
        comment=args.comment or "",
    )
    print(f"approval: {out}")
    return 0


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
