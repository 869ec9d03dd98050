"""in-toto Statement v1 (test-result predicate) for a bundle, and its DSSE Ed25519 signature.

The statement says, in a format supply-chain tooling already reads, "this run of this
runbook PASSED/FAILED and these files (by SHA-256) are its evidence". When a signing key is
configured the statement is wrapped in a DSSE envelope signed with Ed25519; the key is read
from the path in ``Settings.signing_key`` by the runner process only, never by a notebook.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError, VerificationError

__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "load_private_key",
    "keyid",
    "load_public_key",
    "pae",
    "public_key_pem",
    "sign_envelope",
    "split_pems",
    "statement",
    "verify_envelope",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://in-toto.io/attestation/test-result/v0.1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def statement(
    subjects: dict[str, str],
    *,
    result: str,
    configuration: list[dict[str, Any]],
    passed: list[str],
    failed: list[str],
    url: str = "",
) -> dict[str, Any]:
    """The Statement: subjects are the bundle's files, predicate the test-result verdict."""
    predicate: dict[str, Any] = {
        "result": result,
        "configuration": configuration,
        "passedTests": passed,
        "warnedTests": [],
        "failedTests": failed,
    }
    if url:
        predicate["url"] = url
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": digest}} for name, digest in sorted(subjects.items())
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def load_private_key(path: Path, password: bytes | None = None) -> Any:
    """The Ed25519 private key at ``path`` (PEM; encrypted when ``password`` is given)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=password)
    except (OSError, ValueError, TypeError) as e:
        kind = "PEM private key with that passphrase" if password else "unencrypted PEM private key"
        raise ConfigError(f"signing key {path}: cannot be read as an {kind} ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path}: is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(data: bytes, where: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise VerificationError(f"{where}: not a PEM public key", [f"{where}: not a PEM public key"]) from e
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError(f"{where}: not an Ed25519 public key", [f"{where}: not an Ed25519 key"])
    return key


def public_key_pem(private_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def keyid(public_pem: bytes) -> str:
    """A stable key id: SHA-256 of the PEM public key (surrounding whitespace ignored)."""
    return hashlib.sha256(public_pem.strip() + b"\n").hexdigest()


def split_pems(data: bytes) -> list[bytes]:
    """Every ``PUBLIC KEY`` PEM block in ``data`` (a key file may list several)."""
    import re

    return [
        m.group().strip() + b"\n"
        for m in re.finditer(rb"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", data, re.S)
    ]


def sign_envelope(payload: bytes, private_key: Any, payload_type: str = PAYLOAD_TYPE) -> dict[str, Any]:
    """A DSSE envelope over ``payload`` (the statement file's exact bytes)."""
    sig = private_key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid(public_key_pem(private_key)), "sig": base64.b64encode(sig).decode()}],
    }


def verify_envelope(envelope: dict[str, Any], public_key: Any, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Check the envelope's signature with ``public_key``; returns the payload.

    Raises ``ValueError`` with a reason when it does not verify (the caller names the file).
    """
    from cryptography.exceptions import InvalidSignature

    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        sigs = envelope["signatures"]
        found_type = envelope["payloadType"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed DSSE envelope ({e})") from e
    if found_type != payload_type:
        raise ValueError(f"payloadType is {found_type!r}, expected {payload_type!r}")
    for s in sigs:
        try:
            public_key.verify(base64.b64decode(s["sig"]), pae(payload_type, payload))
            return payload
        except (InvalidSignature, KeyError, TypeError, ValueError):
            continue
    raise ValueError("no signature verifies with the public key")


def canonical(obj: Any) -> bytes:
    """The bytes we hash and sign: sorted keys, two-space indent, trailing newline (readable)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
