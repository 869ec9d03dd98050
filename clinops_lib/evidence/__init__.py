"""Evidence bundles: seal a run's files into the archive, verify bundles and archives, list runs.

``seal`` (:mod:`.seal`) writes a bundle and the archive's signed checkpoint (:mod:`.checkpoint`);
``verify`` / ``list_runs`` (:mod:`.verify`) read them; :mod:`.manifest` holds the hashes and the
append-only chain, :mod:`.attest` the in-toto statement and its DSSE signature, :mod:`.secretgate`
the scan that keeps secrets out (in any encoding), :mod:`.approvals` the signed approvals of
people named in the approvers registry, :mod:`.remote` the write-once copy (S3 Object Lock).
"""

from __future__ import annotations

from .seal import ENVELOPE, PUBLIC_KEY, STATEMENT_SIGNED, STATEMENT_UNSIGNED, bundle_name, seal
from .verify import VerifyReport, list_runs, verify, verify_archive, verify_bundle

__all__ = [
    "ENVELOPE",
    "PUBLIC_KEY",
    "STATEMENT_SIGNED",
    "STATEMENT_UNSIGNED",
    "VerifyReport",
    "bundle_name",
    "list_runs",
    "seal",
    "verify",
    "verify_archive",
    "verify_bundle",
]
