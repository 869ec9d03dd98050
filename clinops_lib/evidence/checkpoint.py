"""The archive's signed checkpoint: how many bundles the chain holds and which one is its head.

The chain protects the past (each bundle's signed statement names its predecessor), but not
the present: deleting the newest bundle and its chain line leaves a shorter chain that is
still internally consistent. A transparency log answers this with a *signed tree head*; the
archive writes the same thing after every seal: ``checkpoint.json``, a DSSE envelope over
``{size, head bundle, head manifest hash, time}`` signed with the archive's key. Locally, a
truncated tail then disagrees with the checkpoint; an attacker who also restores an *older*
checkpoint (or deletes it) is caught by the remote, write-once copy
(:mod:`clinops_lib.evidence.remote`), which keeps every checkpoint ever pushed.
"""

from __future__ import annotations

import json
import os
from base64 import b64decode, b64encode
from pathlib import Path
from typing import Any

from ..exceptions import VerificationError
from ..runs.runrecord import iso, utc_now
from . import attest as _attest

__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_TYPE", "read_checkpoint", "verify_checkpoint", "write_checkpoint"]

CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_TYPE = "application/vnd.clinops.evidence-checkpoint+json"
SCHEMA = "clinops-evidence-checkpoint/v1"


def checkpoint_body(chain: list[dict[str, Any]]) -> dict[str, Any]:
    head = chain[-1] if chain else {}
    return {
        "schema": SCHEMA,
        "size": len(chain),
        "head_bundle": head.get("bundle"),
        "head_manifest_sha256": head.get("manifest_sha256"),
        "written_utc": iso(utc_now()),
    }


def write_checkpoint(archive: Path, chain: list[dict[str, Any]], private_key: Any | None) -> dict[str, Any]:
    """Write (atomically) the checkpoint of ``chain``; signed when a key is given."""
    payload = _attest.canonical(checkpoint_body(chain))
    if private_key is not None:
        envelope = _attest.sign_envelope(payload, private_key, CHECKPOINT_TYPE)
        envelope["public_key"] = _attest.public_key_pem(private_key).decode()
    else:
        envelope = {"payloadType": CHECKPOINT_TYPE, "payload": b64encode(payload).decode(), "signatures": []}
    tmp = archive / f".{CHECKPOINT_FILE}.tmp"
    tmp.write_bytes(_attest.canonical(envelope))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(archive / CHECKPOINT_FILE)
    return envelope


def read_checkpoint(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(envelope, body)`` of a checkpoint file's bytes; ValueError when malformed."""
    envelope = json.loads(data)
    body = json.loads(b64decode(envelope["payload"], validate=True))
    if body.get("schema") != SCHEMA:
        raise ValueError(f"schema is {body.get('schema')!r}, expected {SCHEMA!r}")
    return envelope, body


def verify_checkpoint(
    archive: Path, chain: list[dict[str, Any]], trusted: list[bytes], *, signed_archive: bool
) -> list[str]:
    """Problems of the archive's checkpoint against its chain.

    ``trusted`` are the public keys a signed checkpoint must verify with (the configured keys,
    else the keys the archive's bundles were signed with); ``signed_archive`` says whether any
    bundle is signed (then an unsigned or missing checkpoint is a problem).
    """
    path = archive / CHECKPOINT_FILE
    if not path.exists():
        if chain:
            head = chain[-1].get("bundle")
            return [f"{CHECKPOINT_FILE}: missing: the chain's head ({head}) cannot be confirmed"]
        return []
    try:
        envelope, body = read_checkpoint(path.read_bytes())
    except (ValueError, KeyError, TypeError) as e:
        return [f"{CHECKPOINT_FILE}: not a valid checkpoint ({e})"]
    problems: list[str] = []
    if envelope.get("signatures"):
        ok = False
        for pem in trusted:
            try:
                _attest.verify_envelope(envelope, _attest.load_public_key(pem, "key"), CHECKPOINT_TYPE)
                ok = True
                break
            except (ValueError, VerificationError):  # not this key
                continue
        if not ok:
            problems.append(f"{CHECKPOINT_FILE}: signature does not verify with any expected key")
    elif signed_archive:
        problems.append(f"{CHECKPOINT_FILE}: unsigned, but the archive's bundles are signed")
    size = body.get("size")
    if not isinstance(size, int):
        return [*problems, f"{CHECKPOINT_FILE}: no size"]
    if size > len(chain):
        problems.append(
            f"{body.get('head_bundle')}: missing: tail truncated: the checkpoint records {size} bundle(s) "
            f"up to {body.get('head_bundle')}, the chain holds {len(chain)}"
        )
    elif size < len(chain):
        extra = ", ".join(str(e.get("bundle")) for e in chain[size:])
        problems.append(f"{extra}: after the checkpoint's head (size {size}): not confirmed by a checkpoint")
    elif size and chain[size - 1].get("manifest_sha256") != body.get("head_manifest_sha256"):
        problems.append(
            f"{chain[size - 1].get('bundle')}: its manifest hash differs from the checkpoint's head"
        )
    return problems
