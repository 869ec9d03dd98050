"""Evidence bundles: seal a run's files into the archive, verify bundles and archives, list runs.

A bundle is a folder ``<archive>/<runbook>/<UTC time>-<run id>/`` holding what an auditor
needs to read a run without any tooling (the executed notebook, an offline HTML copy, the
parameters with secrets redacted, the run record, the verdict, the data files) plus what a
machine needs to prove nothing changed since (``manifest.json`` with every file's SHA-256 and
the chain link, an in-toto Statement, and a DSSE Ed25519 signature when a key is configured).

Sealing is the last step of :mod:`clinops_lib.runner`; the files are assembled and passed
through the secret gate in a scratch directory first, so the archive only ever receives
redacted files (a partially copied bundle is renamed into place only when complete).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _attest
from ._checkpoint import verify_checkpoint, write_checkpoint
from ._manifest import (
    CHAIN_FILE,
    MANIFEST,
    append_chain,
    archive_lock,
    bundle_files,
    read_chain,
    sha256_file,
)
from ._secretgate import SecretGate
from .config import Settings

if TYPE_CHECKING:
    from ._approvals import Registry
from .exceptions import ConfigError, EvidenceError, SecretLeakError, VerificationError
from .runrecord import iso, utc_now

__all__ = [
    "STATEMENT_SIGNED",
    "STATEMENT_UNSIGNED",
    "VerifyReport",
    "bundle_name",
    "signed_position",
    "list_from_cli",
    "approve_from_cli",
    "list_runs",
    "push_from_cli",
    "seal",
    "verify",
    "verify_from_cli",
]

MANIFEST_SCHEMA = "clinops-evidence-manifest/v1"
STATEMENT_SIGNED = "attestation.intoto.json"
STATEMENT_UNSIGNED = "attestation.UNSIGNED.intoto.json"
ENVELOPE = "attestation.dsse.json"
PUBLIC_KEY = "signing-key.pub.pem"
ATTESTATION_FILES = (STATEMENT_SIGNED, STATEMENT_UNSIGNED, ENVELOPE, PUBLIC_KEY)


def bundle_name(started: datetime, run_id: str) -> str:
    """``20250101T120000Z-<run id>``: sorts by time, unique by run id."""
    return f"{started.strftime('%Y%m%dT%H%M%SZ')}-{run_id}"


# -- sealing ----------------------------------------------------------------------------------
CHAIN_DESCRIPTOR = "clinops-chain-position"


def _statement_for(
    staging: Path, verdict: dict[str, Any], runbook: str, position: dict[str, Any]
) -> dict[str, Any]:
    """The statement; ``position`` (sequence, previous manifest hash, bundle path, seal time)
    is part of what is signed, so relinking, reordering, moving or backdating breaks the signature."""
    subjects = bundle_files(staging, exclude=(MANIFEST, *ATTESTATION_FILES))
    checks = verdict.get("checks", [])
    passed = [c["name"] for c in checks if c.get("passed")]
    failed = [c["name"] for c in checks if not c.get("passed")]
    cell = verdict.get("failed_cell")
    if cell:
        failed.append(f"cell {cell.get('index')}: {cell.get('ename')}")
    if verdict.get("secret_gate", {}).get("findings"):
        failed.append("secret gate")
    configuration: list[dict[str, Any]] = [
        {"name": name, "digest": {"sha256": subjects[name]}}
        for name in ("parameters.json", "run-record.json")
        if name in subjects
    ]
    configuration.append({"name": f"runbook:{runbook}"})
    configuration.append({"name": CHAIN_DESCRIPTOR, "annotations": position})
    return _attest.statement(
        subjects, result=verdict["verdict"], configuration=configuration, passed=passed, failed=failed
    )


def signed_position(statement: dict[str, Any]) -> dict[str, Any] | None:
    """The chain position a statement records (None for statements sealed before it existed)."""
    for item in statement.get("predicate", {}).get("configuration", []):
        if isinstance(item, dict) and item.get("name") == CHAIN_DESCRIPTOR:
            annotations = item.get("annotations")
            return annotations if isinstance(annotations, dict) else None
    return None


def _gate_again(staging: Path, gate: SecretGate | None) -> None:
    """The manifest and attestations are written after the run's gate: check them and every
    name once more. Nothing is redacted here (that would break what was just signed): a hit
    stops the seal."""
    if gate is None:
        return
    hits = []
    for path in sorted(staging.rglob("*")):
        rel = path.relative_to(staging).as_posix()
        if gate.find(rel)[1]:
            hits.append(f"a file name ({gate.redact_name(rel)[0]})")
        if path.is_file() and path.name in (MANIFEST, *ATTESTATION_FILES):
            if gate.find(path.read_text(encoding="utf-8"))[1]:
                hits.append(rel)
    if hits:
        raise SecretLeakError(f"secret gate: a secret reached {', '.join(hits)} after redaction; not sealed")


def seal(
    staging: Path,
    archive: Path,
    *,
    runbook: str,
    run_id: str,
    started: datetime,
    verdict: dict[str, Any],
    signing_key: Path | None = None,
    gate: SecretGate | None = None,
) -> Path:
    """Attest, hash and move ``staging`` into the archive as the chain's next bundle.

    ``staging`` must already have passed the secret gate (``gate``, when given, checks the
    manifest, attestations and names written here once more); it is consumed (moved).
    After the bundle, the chain line and then the archive's checkpoint are written.
    Returns the bundle's path.
    """
    private_key = _attest.load_private_key(signing_key) if signing_key is not None else None
    name = bundle_name(started, run_id)
    rel = f"{runbook}/{name}"
    with archive_lock(archive):
        chain = read_chain(archive)
        previous = chain[-1]["manifest_sha256"] if chain else None
        final = archive / runbook / name
        if final.exists():
            raise EvidenceError(f"bundle {final} already exists")
        position = {
            "sequence": len(chain),
            "previous_manifest_sha256": previous,
            "bundle": rel,
            "sealed_utc": iso(utc_now()),
        }
        statement = _attest.canonical(_statement_for(staging, verdict, runbook, position))
        if private_key is None:
            (staging / STATEMENT_UNSIGNED).write_bytes(statement)
            signature: dict[str, Any] = {"signature": "none"}
        else:
            pub = _attest.public_key_pem(private_key)
            (staging / STATEMENT_SIGNED).write_bytes(statement)
            (staging / ENVELOPE).write_bytes(_attest.canonical(_attest.sign_envelope(statement, private_key)))
            (staging / PUBLIC_KEY).write_bytes(pub)
            signature = {"signature": "ed25519-dsse", "public_key_sha256": _attest.keyid(pub)}
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "runbook": runbook,
            "run_id": run_id,
            **position,
            "verdict": verdict["verdict"],
            **signature,
            "files": bundle_files(staging),
        }
        (staging / MANIFEST).write_bytes(_attest.canonical(manifest))
        _gate_again(staging, gate)
        partial = final.parent / f".{name}.partial"
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, partial)
        partial.rename(final)
        entry = {
            "sequence": len(chain),
            "bundle": rel,
            "manifest_sha256": sha256_file(final / MANIFEST),
            "previous_manifest_sha256": previous,
            "sealed_utc": manifest["sealed_utc"],
        }
        append_chain(archive, entry)
        write_checkpoint(archive, [*chain, entry], private_key)
    shutil.rmtree(staging, ignore_errors=True)
    return final


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
    return {_attest.keyid(k) for k in keys}


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
    if expected and _attest.keyid(embedded) not in _keyids(expected):
        problems.append(
            f"{label}: signed with a different key ({_attest.keyid(embedded)[:16]}...) "
            "than the expected key(s)"
        )
    if _attest.keyid(embedded) != manifest.get("public_key_sha256"):
        problems.append(f"{label}/{PUBLIC_KEY}: does not match the key id in the manifest")
    try:
        key = _attest.load_public_key(embedded, f"{label} public key")
        payload = _attest.verify_envelope(envelope, key)
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
        statement.get("_type") != _attest.STATEMENT_TYPE
        or statement.get("predicateType") != _attest.PREDICATE_TYPE
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
        keys += _attest.split_pems(public_key) or [public_key]
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
    from ._approvals import APPROVALS_DIR, approved_bundle, verify_approval

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
            if not expected and signer_keys and _attest.keyid(key) not in _keyids(signer_keys):
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
        from ._approvals import load_registry

        registry = load_registry(settings.approvers_file)
    report = verify(
        Path(args.path),
        public_key=public_key,
        expected_keys=settings.expected_public_keys(),
        registry=registry,
    )
    if getattr(args, "remote", False):
        from ._remote import compare, remote_from_settings

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
    from ._remote import push, remote_from_settings

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
    from ._approvals import approve, load_registry

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
