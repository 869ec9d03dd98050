"""The secret gate: nothing the run knew as a secret may be sealed into evidence.

Evidence is kept for years and shown to auditors; a password that slipped into a cell output
would be kept with it. Before a bundle is sealed every file is scanned for

* the *values* the run knew to be secret: parameters declared ``# secret``, values a runbook
  registered with ``record.secret()``, and credentials in the environment (``*_SECRET*``,
  ``*_TOKEN``, ``*_PASSWORD``, ... with non-trivial values), in their raw, JSON-escaped and
  HTML-escaped spellings (a notebook is JSON, its copy is HTML);
* *patterns* of well-known secrets: AWS access key ids, AWS secret keys next to
  ``aws_secret...``, GitHub and Slack tokens, PEM private keys.

A hit is replaced by ``***REDACTED***`` in place and reported by *label and file*, never by
value, so the report itself cannot leak. The caller turns findings into a FAILED verdict.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..runs.params import REDACTED

__all__ = ["PATTERNS", "SecretGate", "env_credentials"]

#: Environment variable names whose values are credentials.
_ENV_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|APIKEY|PRIVATE_KEY|CREDENTIAL|_PAT$)", re.I)
#: Values that are placeholders everywhere (LocalStack's "test" keys), not secrets.
_TRIVIAL = {
    "test",
    "testing",
    "dummy",
    "changeme",
    "localstack",
    "password",
    "secret",
    "none",
    "null",
    "true",
    "false",
    "example",
}
MIN_ENV_SECRET = 8
MIN_DECLARED_SECRET = 4

PATTERNS: dict[str, re.Pattern[str]] = {
    "PEM private key": re.compile(
        r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(?:.*?-----END \1PRIVATE KEY-----)?", re.S
    ),
    "AWS access key id": re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"),
    "AWS secret access key": re.compile(
        r"(?i)(?<=aws_secret)[a-z_]*['\"]?\s*[:=]\s*['\"]?(?-i:[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
    ),
    "GitHub token": re.compile(
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"
    ),
    "Slack token": re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"),
}


def env_credentials(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(label, value) for every credential-looking variable with a non-trivial value."""
    out = []
    for name, value in environ.items():
        if not _ENV_NAME.search(name):
            continue
        v = value.strip()
        if len(v) < MIN_ENV_SECRET or v.lower() in _TRIVIAL or v.startswith(("/", "~", "./")):
            continue  # short placeholders and file paths (e.g. a key *path*) are not secret values
        out.append((f"environment variable {name}", v))
    return out


def _spellings(value: str) -> list[str]:
    """The ways a value appears in our files: raw, inside JSON, inside HTML."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {html.escape(f, quote=q) for f in list(forms) for q in (True, False)}
    return sorted(forms, key=len, reverse=True)  # longest first so a prefix never wins


@dataclass
class SecretGate:
    """Known secret values (with a label each) plus the pattern list."""

    values: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def for_run(
        cls, secret_params: Mapping[str, str], secrets_file: Path | None, environ: Mapping[str, str]
    ) -> SecretGate:
        values = [(f"secret parameter {name!r}", v) for name, v in secret_params.items()]
        if secrets_file is not None and secrets_file.exists():
            for i, line in enumerate(secrets_file.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    values.append((f"record.secret() value #{i}", str(json.loads(line))))
        values += env_credentials(environ)
        return cls([(label, v) for label, v in values if v and len(v) >= MIN_DECLARED_SECRET])

    def redact_text(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every known value and pattern replaced; labels of what was found."""
        found: list[str] = []
        for label, value in self.values:
            for form in _spellings(value):
                if form in text:
                    text = text.replace(form, REDACTED)
                    if label not in found:
                        found.append(label)
        for label, pattern in PATTERNS.items():
            text, n = pattern.subn(REDACTED, text)
            if n and label not in found:
                found.append(label)
        return text, found

    def redact_bytes(self, data: bytes) -> tuple[bytes, list[str]]:
        """Binary files cannot be parsed; the raw UTF-8 bytes of each value are replaced."""
        found = []
        for label, value in self.values:
            raw = value.encode("utf-8")
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
                found.append(label)
        return data, found

    def sweep(self, root: Path) -> list[str]:
        """Redact every file under ``root`` in place; ``"<label> in <relative path>"`` per hit."""
        findings: list[str] = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                new, found = self.redact_bytes(data)
                if found:
                    path.write_bytes(new)
            else:
                new_text, found = self.redact_text(text)
                if found:
                    path.write_text(new_text, encoding="utf-8")
            rel = path.relative_to(root).as_posix()
            findings += [f"{label} in {rel}" for label in found]
        return findings

    def scan_strings(self, items: Iterable[str]) -> bool:
        """True when any of ``items`` holds a secret (used for error messages on the console)."""
        return any(self.redact_text(s)[1] for s in items)
