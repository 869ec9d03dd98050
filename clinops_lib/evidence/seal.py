"""Sealing a run's files into the archive as the chain's next bundle.

A bundle is a folder ``<archive>/<runbook>/<UTC time>-<run id>/`` holding what an auditor
needs to read a run without any tooling (the executed notebook, an offline HTML copy, the
parameters with secrets redacted, the run record, the verdict, the data files) plus what a
machine needs to prove nothing changed since (``manifest.json`` with every file's SHA-256 and
the chain link, an in-toto Statement, and a DSSE Ed25519 signature when a key is configured).

Sealing is the last step of :mod:`clinops_lib.runs.runner`; the files are assembled and passed
through the secret gate in a scratch directory first, so the archive only ever receives
redacted files (a partially copied bundle is renamed into place only when complete).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from ..exceptions import EvidenceError
from ..runs.runrecord import iso, utc_now
from . import attest
from .manifest import (
    MANIFEST,
    append_chain,
    archive_lock,
    bundle_files,
    read_chain,
    sha256_file,
)

__all__ = [
    "ATTESTATION_FILES",
    "ENVELOPE",
    "PUBLIC_KEY",
    "STATEMENT_SIGNED",
    "STATEMENT_UNSIGNED",
    "bundle_name",
    "seal",
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
def _statement_for(staging: Path, verdict: dict[str, Any], runbook: str) -> dict[str, Any]:
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
    return attest.statement(
        subjects, result=verdict["verdict"], configuration=configuration, passed=passed, failed=failed
    )


def seal(
    staging: Path,
    archive: Path,
    *,
    runbook: str,
    run_id: str,
    started: datetime,
    verdict: dict[str, Any],
    signing_key: Path | None = None,
) -> Path:
    """Attest, hash and move ``staging`` into the archive as the chain's next bundle.

    ``staging`` must already have passed the secret gate; it is consumed (moved).
    Returns the bundle's path.
    """
    private_key = attest.load_private_key(signing_key) if signing_key is not None else None
    statement = attest.canonical(_statement_for(staging, verdict, runbook))
    if private_key is None:
        (staging / STATEMENT_UNSIGNED).write_bytes(statement)
        signature: dict[str, Any] = {"signature": "none"}
    else:
        pub = attest.public_key_pem(private_key)
        (staging / STATEMENT_SIGNED).write_bytes(statement)
        (staging / ENVELOPE).write_bytes(attest.canonical(attest.sign_envelope(statement, private_key)))
        (staging / PUBLIC_KEY).write_bytes(pub)
        signature = {"signature": "ed25519-dsse", "public_key_sha256": attest.keyid(pub)}

    name = bundle_name(started, run_id)
    rel = f"{runbook}/{name}"
    with archive_lock(archive):
        chain = read_chain(archive)
        previous = chain[-1]["manifest_sha256"] if chain else None
        final = archive / runbook / name
        if final.exists():
            raise EvidenceError(f"bundle {final} already exists")
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "bundle": rel,
            "runbook": runbook,
            "run_id": run_id,
            "sequence": len(chain),
            "previous_manifest_sha256": previous,
            "sealed_utc": iso(utc_now()),
            "verdict": verdict["verdict"],
            **signature,
            "files": bundle_files(staging),
        }
        (staging / MANIFEST).write_bytes(attest.canonical(manifest))
        partial = final.parent / f".{name}.partial"
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, partial)
        partial.rename(final)
        append_chain(
            archive,
            {
                "sequence": len(chain),
                "bundle": rel,
                "manifest_sha256": sha256_file(final / MANIFEST),
                "previous_manifest_sha256": previous,
                "sealed_utc": manifest["sealed_utc"],
            },
        )
    shutil.rmtree(staging, ignore_errors=True)
    return final

