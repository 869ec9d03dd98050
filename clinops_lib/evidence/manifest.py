"""Hashes, the per-bundle manifest and the archive's append-only chain.

The archive (the evidence root) holds bundles ``<runbook>/<UTC time>-<run id>/`` and one
``chain.jsonl``: a line per sealed bundle, in seal order, with the SHA-256 of its
``manifest.json`` and the previous line's hash. Each manifest also records the previous
manifest hash and its sequence number, so

* changing, adding or removing a file in a bundle breaks its manifest,
* re-hashing a manifest after such a change breaks the chain entry and the next bundle's link,
* deleting or reordering bundles (or chain lines) breaks sequence numbers and links.

Sealing holds an exclusive ``flock`` on ``.chain.lock`` so two concurrent runs can never both
link to the same predecessor (which would fork the chain).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..exceptions import EvidenceError, WaitTimeout

__all__ = [
    "CHAIN_FILE",
    "LOCK_FILE",
    "MANIFEST",
    "append_chain",
    "archive_lock",
    "bundle_files",
    "read_chain",
    "sha256_file",
]

MANIFEST = "manifest.json"
CHAIN_FILE = "chain.jsonl"
LOCK_FILE = ".chain.lock"
LOCK_TIMEOUT_S = 300.0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundle_files(bundle: Path, *, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file in a bundle directory."""
    out = {}
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(bundle).as_posix()
        if rel in exclude:
            continue
        out[rel] = sha256_file(path) if path.is_file() else "symlink"
    return out


@contextlib.contextmanager
def archive_lock(archive: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive lock on the archive's chain; waits up to ``timeout`` seconds for it."""
    archive.mkdir(parents=True, exist_ok=True)
    fh = open(archive / LOCK_FILE, "a+")  # noqa: SIM115 - held for the duration of the context
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WaitTimeout(
                        f"waited {timeout:.0f} s for the evidence archive lock "
                        f"{archive / LOCK_FILE} (another run is sealing); it was not released"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        fh.close()  # closing releases the flock


def read_chain(archive: Path) -> list[dict[str, Any]]:
    """The chain's entries in order; a line that is not JSON is an EvidenceError naming it."""
    path = archive / CHAIN_FILE
    if not path.exists():
        return []
    entries = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise EvidenceError(f"{path}: line {i} is not JSON ({e.msg})") from e
    return entries


def append_chain(archive: Path, entry: dict[str, Any]) -> None:
    """Append one line and fsync it: the chain is the archive's ledger."""
    with open(archive / CHAIN_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
