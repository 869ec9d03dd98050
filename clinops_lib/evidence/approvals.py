"""Signed approvals: a person's electronic signature bound to the evidence it approves.

A manual promotion in a GxP setting is an electronic signature (21 CFR 11.50, 11.70,
11.100/11.200; EU Annex 11 section 14). Argo Rollouts' promote is an unauthenticated status
patch; this module makes it a record that can be verified years later:

* **who** -- the approvers registry committed in the repository
  (``compliance/approvers.yaml``, :class:`Registry`): each person's printed name, role and
  Ed25519 public key; each role lists the meanings and environments it may sign for. A key
  not in the registry, or a meaning/environment the role may not sign, is refused when
  signing *and* when verifying (the registry at verification time is what counts).
* **what it means** -- one of :data:`MEANINGS`, never free text.
* **what it is linked to** (11.70) -- the statement's subject is the approved bundle's
  ``manifest.json`` by SHA-256, and the predicate repeats the service, the versions and the
  environment from the bundle's ``data/release.json``; an approval copied to another bundle
  or release does not verify.
* **two components** (11.200) -- possession of the private key (PEM, encrypted) and
  knowledge of its passphrase, asked without echo (``getpass``) and never stored.

The approval is an in-toto Statement in a DSSE envelope, like the bundle's own attestation.
A sealed bundle cannot change, so approvals live beside it in the archive:
``<archive>/approvals/<runbook>/<bundle name>/<UTC time>-<key id>.approval.json``.
"""

from __future__ import annotations

import base64
import getpass
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..exceptions import ConfigError, VerificationError
from ..runs.runrecord import iso, utc_now
from . import attest as _attest
from .manifest import MANIFEST, sha256_file

__all__ = [
    "APPROVALS_DIR",
    "MEANINGS",
    "Approval",
    "Approver",
    "Registry",
    "approvals_for",
    "approve",
    "load_registry",
    "manifestation",
    "preflight_promotion",
    "read_release",
    "require_promotion_approval",
    "signature_line",
    "verify_approval",
]

MEANINGS = ("reviewed", "approved for promotion", "rejected")
PROMOTE = "approved for promotion"
REJECT = "rejected"
PREDICATE_TYPE = "https://clinops.dev/attestation/approval/v1"
PAYLOAD_TYPE = _attest.PAYLOAD_TYPE
APPROVALS_DIR = "approvals"
RELEASE_FILE = "data/release.json"
RELEASE_FIELDS = ("service", "stable_version", "candidate_version", "environment")


@dataclass(frozen=True)
class Approver:
    """One person in the registry."""

    name: str
    role: str
    public_key: bytes

    @property
    def key_id(self) -> str:
        return _attest.keyid(self.public_key)


@dataclass(frozen=True)
class Role:
    """What a role may sign: meanings and environments."""

    meanings: tuple[str, ...]
    environments: tuple[str, ...]


@dataclass(frozen=True)
class Registry:
    """The approvers registry: people by key id, and what each role may approve."""

    approvers: tuple[Approver, ...]
    roles: dict[str, Role]
    source: str = "approvers registry"

    def by_key(self, public_pem: bytes) -> Approver | None:
        wanted = _attest.keyid(public_pem)
        return next((a for a in self.approvers if a.key_id == wanted), None)

    def may(self, approver: Approver, meaning: str, environment: str) -> str | None:
        """None when allowed, else why not."""
        role = self.roles.get(approver.role)
        if role is None:
            return f"{approver.name}'s role {approver.role!r} is not defined in the {self.source}"
        if meaning not in role.meanings:
            return f"role {approver.role!r} may not sign {meaning!r} (may: {', '.join(role.meanings)})"
        if environment not in role.environments:
            return f"role {approver.role!r} may not sign for environment {environment!r}"
        return None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return tuple(value)


def load_registry(path: Path) -> Registry:
    """Read and validate ``approvers.yaml``; ConfigError naming the entry that is wrong."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"approvers registry {path}: cannot be read ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"approvers registry {path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"approvers registry {path}: must be a mapping with 'roles' and 'approvers'")
    roles: dict[str, Role] = {}
    for name, spec in (data.get("roles") or {}).items():
        where = f"{path}: role {name!r}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a mapping")
        meanings = _strings(spec.get("meanings"), f"{where} meanings")
        unknown = [m for m in meanings if m not in MEANINGS]
        if unknown:
            raise ConfigError(f"{where}: unknown meaning(s) {unknown}; known: {', '.join(MEANINGS)}")
        roles[str(name)] = Role(meanings, _strings(spec.get("environments"), f"{where} environments"))
    approvers = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(data.get("approvers") or []):
        where = f"{path}: approver #{i + 1}"
        if not isinstance(entry, dict) or not all(entry.get(k) for k in ("name", "role", "public_key")):
            raise ConfigError(f"{where}: needs name, role and public_key")
        pems = _attest.split_pems(str(entry["public_key"]).encode())
        if len(pems) != 1:
            raise ConfigError(f"{where} ({entry['name']}): public_key must be exactly one PEM public key")
        try:
            _attest.load_public_key(pems[0], where)
        except VerificationError as e:
            raise ConfigError(f"{where} ({entry['name']}): {e}") from e
        if entry["role"] not in roles:
            raise ConfigError(f"{where} ({entry['name']}): role {entry['role']!r} is not defined under roles")
        approver = Approver(str(entry["name"]), str(entry["role"]), pems[0])
        if approver.key_id in seen:
            raise ConfigError(f"{where}: {approver.name} shares a key with {seen[approver.key_id]}")
        seen[approver.key_id] = approver.name
        approvers.append(approver)
    return Registry(tuple(approvers), roles, f"approvers registry {path}")


# -- the approved thing -----------------------------------------------------------------------------
def read_release(bundle: Path) -> dict[str, str]:
    """What a bundle awaiting approval proposes: service, versions, environment."""
    path = bundle / RELEASE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{bundle}: no {RELEASE_FILE}: this bundle does not await an approval") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{bundle}/{RELEASE_FILE}: unreadable ({e})") from e
    missing = [k for k in RELEASE_FIELDS if not isinstance(data.get(k), str) or not data.get(k)]
    if missing:
        raise ConfigError(f"{bundle}/{RELEASE_FILE}: missing {', '.join(missing)}")
    return {k: data[k] for k in RELEASE_FIELDS}


def _bundle_rel(bundle: Path) -> str:
    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    return str(manifest.get("bundle") or f"{bundle.parent.name}/{bundle.name}")


def approvals_dir(archive: Path, bundle_rel: str) -> Path:
    return archive / APPROVALS_DIR / bundle_rel


# -- signing ---------------------------------------------------------------------------------------
def _load_signer_key(key: Path, ask: Callable[[str], str]) -> Any:
    """The approver's private key. It must be encrypted (the passphrase is the second
    component of the signature); the passphrase is asked without echo, held in memory for
    this call only and never written anywhere."""
    try:
        _attest.load_private_key(key)
    except ConfigError as e:
        if "encrypted" not in str(e):
            raise
    else:
        raise ConfigError(
            f"approver key {key}: not encrypted; an approval needs two components (key and passphrase): "
            f"encrypt it with `openssl pkey -in {key} -aes-256-cbc -out NEW.pem`"
        )
    passphrase = ask(f"passphrase for {key}: ")
    try:
        return _attest.load_private_key(key, passphrase.encode())
    finally:
        del passphrase


@dataclass(frozen=True)
class Approval:
    """A verified approval: who, when, what it means, what it approves."""

    name: str
    role: str
    meaning: str
    signed_utc: str
    bundle: str
    manifest_sha256: str
    release: dict[str, str]
    path: Path | None = None

    @property
    def manifestation(self) -> str:
        return manifestation(self.name, self.signed_utc, self.meaning, self.role)


def manifestation(name: str, signed_utc: str, meaning: str, role: str = "") -> str:
    """The 21 CFR 11.50 line: printed name, date and time (UTC), meaning."""
    who = f"{name} ({role})" if role else name
    return f"Signed by {who} on {signed_utc} UTC, meaning: {meaning}"


def approved_bundle(envelope_bytes: bytes) -> str:
    """The archive path of the bundle an approval file names (unverified; "" when unreadable)."""
    try:
        return str(json.loads(base64.b64decode(json.loads(envelope_bytes)["payload"]))["predicate"]["bundle"])
    except (ValueError, KeyError, TypeError):
        return ""


def signature_line(envelope_bytes: bytes) -> str:
    """The manifestation of an approval file as recorded in it (no verification here)."""
    try:
        statement = json.loads(base64.b64decode(json.loads(envelope_bytes)["payload"]))
        p = statement["predicate"]
        return manifestation(p["signer"]["name"], p["signed_utc"], p["meaning"], p["signer"].get("role", ""))
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable approval ({e})"


def approve(
    bundle: Path,
    *,
    meaning: str,
    key: Path,
    registry: Registry,
    archive: Path | None = None,
    ask_passphrase: Callable[[str], str] = getpass.getpass,
    comment: str = "",
) -> Path:
    """Sign ``meaning`` for ``bundle`` with the approver's key; returns the approval file.

    Refused (ConfigError, nothing written) when the meaning is not one of :data:`MEANINGS`,
    the key is not in the registry, the role may not sign this meaning or environment, or
    the bundle does not verify or does not await an approval.
    """
    from .verify import verify

    bundle = Path(bundle).resolve()
    if meaning not in MEANINGS:
        raise ConfigError(f"--meaning {meaning!r}: must be one of {', '.join(repr(m) for m in MEANINGS)}")
    report = verify(bundle)
    if not report.ok:
        raise ConfigError(f"{bundle}: does not verify, nothing to approve: {report.problems[0]}")
    release = read_release(bundle)
    private_key = _load_signer_key(key, ask_passphrase)
    public = _attest.public_key_pem(private_key)
    approver = registry.by_key(public)
    if approver is None:
        raise ConfigError(f"key {key}: not in the {registry.source} (key id {_attest.keyid(public)[:16]}...)")
    why_not = registry.may(approver, meaning, release["environment"])
    if why_not:
        raise ConfigError(f"{approver.name} cannot sign this: {why_not}")
    rel = _bundle_rel(bundle)
    signed = iso(utc_now())
    statement = {
        "_type": _attest.STATEMENT_TYPE,
        "subject": [{"name": f"{rel}/{MANIFEST}", "digest": {"sha256": sha256_file(bundle / MANIFEST)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "meaning": meaning,
            "signer": {"name": approver.name, "role": approver.role, "key_sha256": approver.key_id},
            "signed_utc": signed,
            "bundle": rel,
            "release": release,
            "comment": comment,
        },
    }
    envelope = _attest.sign_envelope(_attest.canonical(statement), private_key)
    archive = archive or bundle.parent.parent
    out_dir = approvals_dir(archive, rel)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = (
        out_dir
        / f"{signed.replace(':', '').replace('-', '').replace('.', '')}-{approver.key_id[:12]}.approval.json"
    )
    out.write_bytes(_attest.canonical(envelope))
    return out


# -- verifying -------------------------------------------------------------------------------------
def verify_approval(
    envelope_bytes: bytes, registry: Registry, *, bundle: Path | None = None, where: str = "approval"
) -> Approval:
    """Check one approval; VerificationError naming every problem.

    Verifies the signature with the registry's keys only (a key not in the registry is
    refused), that the signer's name and role are the registry's, that the role may sign this
    meaning for this environment and, when ``bundle`` is given, that the approval is of
    *that* bundle (manifest hash) and of the release it proposes.
    """
    problems: list[str] = []
    try:
        envelope = json.loads(envelope_bytes)
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        predicate = statement["predicate"]
        subject = statement["subject"][0]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise VerificationError(
            f"{where}: not an approval", [f"{where}: not an approval envelope ({e})"]
        ) from e
    signer: Approver | None = None
    for candidate in registry.approvers:
        try:
            _attest.verify_envelope(envelope, _attest.load_public_key(candidate.public_key, candidate.name))
        except ValueError:
            continue
        signer = candidate
        break
    if signer is None:
        problems.append(f"{where}: signed by a key that is not in the {registry.source}")
    else:
        claimed = predicate.get("signer", {})
        if claimed.get("name") != signer.name or claimed.get("role") != signer.role:
            problems.append(
                f"{where}: names {claimed.get('name')!r} ({claimed.get('role')!r}) but the key is "
                f"{signer.name}'s ({signer.role})"
            )
        if statement.get("predicateType") != PREDICATE_TYPE:
            problems.append(f"{where}: predicateType is not {PREDICATE_TYPE}")
        meaning = predicate.get("meaning")
        if meaning not in MEANINGS:
            problems.append(f"{where}: meaning {meaning!r} is not one of {', '.join(MEANINGS)}")
        else:
            why_not = registry.may(signer, meaning, str(predicate.get("release", {}).get("environment")))
            if why_not:
                problems.append(f"{where}: {why_not}")
    if bundle is not None:
        rel = _bundle_rel(bundle)
        if subject.get("digest", {}).get("sha256") != sha256_file(bundle / MANIFEST):
            problems.append(f"{where}: approves another bundle ({predicate.get('bundle')}), not {rel}")
        else:
            try:
                release = read_release(bundle)
            except ConfigError as e:
                problems.append(f"{where}: {e}")
            else:
                if predicate.get("release") != release:
                    problems.append(
                        f"{where}: approves release {predicate.get('release')}, the bundle proposes {release}"
                    )
    if problems:
        raise VerificationError(problems[0], problems)
    assert signer is not None
    return Approval(
        name=signer.name,
        role=signer.role,
        meaning=str(predicate["meaning"]),
        signed_utc=str(predicate.get("signed_utc")),
        bundle=str(predicate.get("bundle")),
        manifest_sha256=str(subject.get("digest", {}).get("sha256")),
        release=dict(predicate.get("release", {})),
    )


def approvals_for(
    bundle: Path, registry: Registry, archive: Path | None = None
) -> tuple[list[Approval], list[str]]:
    """Every approval filed for ``bundle``: the verified ones and the problems of the others."""
    bundle = Path(bundle).resolve()
    archive = archive or bundle.parent.parent
    folder = approvals_dir(archive, _bundle_rel(bundle))
    good: list[Approval] = []
    bad: list[str] = []
    for path in sorted(folder.glob("*.approval.json")) if folder.is_dir() else []:
        where = f"{APPROVALS_DIR}/{path.relative_to(archive / APPROVALS_DIR).as_posix()}"
        try:
            a = verify_approval(path.read_bytes(), registry, bundle=bundle, where=where)
        except VerificationError as e:
            bad += e.problems
            continue
        good.append(Approval(**{**a.__dict__, "path": path}))
    return good, bad


def require_promotion_approval(bundle: Path, registry: Registry, archive: Path | None = None) -> Approval:
    """The valid "approved for promotion" of ``bundle``; ConfigError (exit 2) when there is none,
    when one was "rejected", or naming why each filed approval is invalid."""
    from .verify import verify

    report = verify(Path(bundle))
    if not report.ok:
        raise ConfigError(f"{bundle}: does not verify: {report.problems[0]}")
    good, bad = approvals_for(bundle, registry, archive)
    rejected = [a for a in good if a.meaning == REJECT]
    if rejected:
        raise ConfigError(f"{bundle}: rejected: {rejected[0].manifestation}")
    promote = [a for a in good if a.meaning == PROMOTE]
    if not promote:
        why = "; ".join(bad) if bad else "none filed"
        raise ConfigError(f"{bundle}: no valid approval for promotion ({why})")
    return promote[-1]


def preflight_promotion(values: Mapping[str, Any], settings: Settings) -> Approval:
    """The promote runbook's check before its kernel starts (exit 2 when it fails): the
    ``bundle`` parameter names a bundle with a valid approval for promotion, for the
    environment this run is configured for."""
    bundle = Path(str(values.get("bundle") or ""))
    if not str(values.get("bundle") or "") or not (bundle / MANIFEST).is_file():
        raise ConfigError(f"bundle {str(bundle)!r}: not an evidence bundle (give the awaiting bundle's path)")
    release = read_release(bundle)
    if release["environment"] != settings.environment:
        raise ConfigError(
            f"bundle {bundle} proposes a release to {release['environment']}, this run is configured for "
            f"{settings.environment} (CLINOPS_ENVIRONMENT)"
        )
    return require_promotion_approval(bundle, load_registry(settings.approvers_file))
