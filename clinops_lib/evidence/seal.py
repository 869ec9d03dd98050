"""Sealing a run's files into the archive as the chain's next bundle.

A bundle is a folder ``<archive>/<runbook>/<UTC time>-<run id>/`` holding what an auditor
needs to read a run without any tooling (the executed notebook, an offline HTML copy, the
parameters with secrets redacted, the run record, the verdict, the data files) plus what a
machine needs to prove nothing changed since (``manifest.json`` with every file's SHA-256 and
the chain link, an in-toto Statement, and a DSSE Ed25519 signature when a key is configured).
The signed statement covers the bundle's chain position (sequence, previous manifest hash,
path, seal time) and a signed checkpoint of the chain head is written after every seal
(:mod:`.checkpoint`), so neither relinking nor truncating the chain goes unnoticed.

Sealing is the last step of :mod:`clinops_lib.runs.runner`; the files are assembled and passed
through the secret gate in a scratch directory first, so the archive only ever receives
redacted files (a partially copied bundle is renamed into place only when complete).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from ..exceptions import EvidenceError, SecretLeakError
from ..runs.runrecord import iso, utc_now
from . import attest
from .checkpoint import write_checkpoint
from .manifest import (
    MANIFEST,
    append_chain,
    archive_lock,
    bundle_files,
    read_chain,
    sha256_file,
)
from .secretgate import SecretGate

__all__ = [
    "ATTESTATION_FILES",
    "ENVELOPE",
    "PUBLIC_KEY",
    "STATEMENT_SIGNED",
    "STATEMENT_UNSIGNED",
    "bundle_name",
    "seal",
    "signed_position",
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
    return attest.statement(
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
    private_key = attest.load_private_key(signing_key) if signing_key is not None else None
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
        statement = attest.canonical(_statement_for(staging, verdict, runbook, position))
        if private_key is None:
            (staging / STATEMENT_UNSIGNED).write_bytes(statement)
            signature: dict[str, Any] = {"signature": "none"}
        else:
            pub = attest.public_key_pem(private_key)
            (staging / STATEMENT_SIGNED).write_bytes(statement)
            (staging / ENVELOPE).write_bytes(attest.canonical(attest.sign_envelope(statement, private_key)))
            (staging / PUBLIC_KEY).write_bytes(pub)
            signature = {"signature": "ed25519-dsse", "public_key_sha256": attest.keyid(pub)}
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "runbook": runbook,
            "run_id": run_id,
            **position,
            "verdict": verdict["verdict"],
            **signature,
            "files": bundle_files(staging),
        }
        (staging / MANIFEST).write_bytes(attest.canonical(manifest))
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
