"""The secret gate: nothing the run knew as a secret may be sealed into evidence, in any encoding.

Evidence is kept for years and shown to auditors; a password that slipped into a cell output
would be kept with it. Before a bundle is sealed every file -- and every file *name* -- is
scanned for

* the *values* the run knew to be secret: parameters declared ``# secret``, values a runbook
  registered with ``record.secret()``, and credentials in the environment (``*_SECRET*``,
  ``*_TOKEN``, ``*_PASSWORD``, ... with non-trivial values);
* *patterns* of well-known secrets: AWS access key ids, AWS secret keys next to
  ``aws_secret...``, GitHub and Slack tokens, PEM private keys.

Why normalize instead of listing spellings: the bundle's formats nest (a notebook is JSON, its
copy is HTML holding JSON that plotly escaped with ``\\u002f``; a CSV doubles quotes; a URL
percent-encodes; ``repr()`` writes ``\\x..``). Listing every spelling of every combination does
not terminate, so each file is *decoded* instead: one pass replaces every escape any of these
formats uses (backslash escapes of JSON and Python, HTML entities, percent-encoding, doubled
quotes) and the pass is repeated until nothing changes (nested encodings). A further view
joins pieces a value may be split into (whitespace, line breaks, ``"a" "b"``/``"a", "b"``
string continuations). Every view keeps a map back to the original offsets, so a hit found in
a decoded view is redacted where it actually is, token by token, and the file stays valid JSON
or HTML. On top, each value's base64 (standard and URL-safe, all three byte alignments) and
hex encodings are matched. A value shorter than :data:`MIN_DECLARED_SECRET` characters cannot
be found reliably (it would match by chance): :func:`check_declared` refuses it before a run.

A hit is replaced by ``***REDACTED***`` and reported by *label and file*, never by value, so
the report itself cannot leak. The caller turns findings into a FAILED verdict.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import html
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ParameterError
from ..runs.params import REDACTED

__all__ = [
    "MIN_DECLARED_SECRET",
    "PATTERNS",
    "SecretGate",
    "check_declared",
    "decoded_views",
    "encoded_forms",
    "env_credentials",
]

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
#: Shorter declared secrets fail validation: 7 characters match by chance in megabytes of
#: plotly.js and base64, so they could be neither found reliably nor redacted without damage.
MIN_DECLARED_SECRET = 8
#: Decoding passes per file (an HTML copy of a notebook holding plotly JSON nests three deep).
_MAX_PASSES = 4

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


def check_declared(values: Mapping[str, str]) -> None:
    """Refuse declared secret values the gate cannot detect reliably (before anything runs)."""
    for name, value in values.items():
        if value and len(value) < MIN_DECLARED_SECRET:
            raise ParameterError(
                name,
                f"secret value is {len(value)} characters: too short to detect reliably "
                f"(at least {MIN_DECLARED_SECRET})",
            )


# -- decoded views with a map back to the original --------------------------------------------------
#: One token of any escape the bundle's formats use. Percent-encoded and ``\x`` runs are one
#: token so a multi-byte UTF-8 character decodes whole.
_ESCAPE = re.compile(
    r"\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|(?:\\x[0-9a-fA-F]{2})+|\\[\\\"'/bfnrt]"
    r"|&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
    r"|(?:%[0-9a-fA-F]{2})+"
    r'|(?<=[^"\s,;=(\[{:])""(?=[^"\s,;)\]}:])'  # a quote doubled inside a CSV field, not ""
)
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: What may separate the pieces of a split value: whitespace, and string continuations.
_JOINER = re.compile(r"""\s+|["']\s*[,+]?\s*["']""")


def _decode_token(tok: str) -> str:
    c = tok[0]
    if c == "\\":
        k = tok[1]
        if k == "x":  # a run of \x escapes: bytes of a bytes repr (UTF-8), else str repr code points
            raw = bytes(int(tok[i + 2 : i + 4], 16) for i in range(0, len(tok), 4))
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw.decode("latin-1")
        if k in "uU":
            try:
                return chr(int(tok[2:], 16))
            except (ValueError, OverflowError):
                return tok
        return _SIMPLE.get(k, k)
    if c == "&":
        return html.unescape(tok)
    if c == "%":
        return urllib.parse.unquote(tok, errors="surrogateescape")
    return '"'  # a CSV field doubles its quotes


@dataclass
class _View:
    """A transformed copy of a text and, per piece, where in the original it came from.

    ``starts[i]`` is the view offset where piece ``i`` begins; ``src[i]`` its source span;
    ``literal[i]`` whether it was copied unchanged (then offsets map one to one).
    """

    text: str
    starts: list[int]
    src: list[tuple[int, int]]
    literal: list[bool]

    def span(self, i: int) -> tuple[int, int]:
        """The original span that view offset ``i`` came from."""
        p = bisect.bisect_right(self.starts, i) - 1
        s, e = self.src[p]
        if self.literal[p]:
            o = s + (i - self.starts[p])
            return o, o + 1
        return s, e

    def spans(self, start: int, end: int) -> list[tuple[int, int]]:
        """Original spans covering view range ``[start, end)``, merged where contiguous."""
        out: list[tuple[int, int]] = []
        i = start
        while i < end:
            p = bisect.bisect_right(self.starts, i) - 1
            piece_end = self.starts[p + 1] if p + 1 < len(self.starts) else len(self.text)
            stop = min(end, piece_end)
            s, e = self.src[p]
            if self.literal[p]:
                seg = (s + (i - self.starts[p]), s + (stop - self.starts[p]))
            else:
                seg = (s, e)
            if out and seg[0] <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], seg[1]))
            else:
                out.append(seg)
            i = stop
        return out


def _identity(text: str) -> _View:
    return _View(text, [0], [(0, len(text))], [True])


def _transform(view: _View, pattern: re.Pattern[str], replace: type[str] | object) -> _View | None:
    """Apply ``pattern`` -> ``replace(token)`` to a view; None when nothing matched."""
    text = view.text
    parts: list[str] = []
    starts: list[int] = []
    src: list[tuple[int, int]] = []
    literal: list[bool] = []
    out = 0
    pos = 0
    changed = False

    def copy(a: int, b: int) -> None:
        # literal run [a, b) of the view: split along the view's own pieces to keep the map exact
        nonlocal out
        i = a
        while i < b:
            p = bisect.bisect_right(view.starts, i) - 1
            piece_end = view.starts[p + 1] if p + 1 < len(view.starts) else len(text)
            stop = min(b, piece_end)
            s, e = view.src[p]
            starts.append(out)
            if view.literal[p]:
                src.append((s + (i - view.starts[p]), s + (stop - view.starts[p])))
                literal.append(True)
            else:
                src.append((s, e))
                literal.append(False)
            parts.append(text[i:stop])
            out += stop - i
            i = stop

    for m in pattern.finditer(text):
        new = replace(m.group())  # type: ignore[operator]
        if new == m.group():
            continue
        changed = True
        copy(pos, m.start())
        if new:
            spans = view.spans(m.start(), m.end())
            starts.append(out)
            src.append((spans[0][0], spans[-1][1]))
            literal.append(False)
            parts.append(new)
            out += len(new)
        pos = m.end()
    if not changed:
        return None
    copy(pos, len(text))
    # adjacent empty pieces (zero-length literals) would confuse bisect: drop them
    keep = [i for i in range(len(starts)) if i + 1 == len(starts) or starts[i + 1] > starts[i]]
    return _View(
        "".join(parts), [starts[i] for i in keep], [src[i] for i in keep], [literal[i] for i in keep]
    )


def decoded_views(text: str) -> list[_View]:
    """The text itself, each decoding pass until nothing changes, and the joined view."""
    views = [_identity(text)]
    for _ in range(_MAX_PASSES):
        nxt = _transform(views[-1], _ESCAPE, _decode_token)
        if nxt is None:
            break
        views.append(nxt)
    joined = _transform(views[-1], _JOINER, lambda _tok: "")
    if joined is not None:
        views.append(joined)
    return views


def _decode_fully(value: str) -> str:
    return decoded_views(value)[-1].text


# -- encodings of a value -----------------------------------------------------------------------------
def _base64_forms(raw: bytes) -> set[str]:
    """Base64 substrings that only the value's bytes determine, at each of the 3 alignments."""
    out = set()
    n = len(raw)
    for k in range(3):
        data = b"\0" * k + raw + b"\0\0"
        first = -(-8 * k // 6)  # ceil: first character holding no prefix bits
        last = (8 * (k + n)) // 6  # exclusive: characters before hold no suffix bits
        for enc in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
            piece = enc.decode()[first:last]
            if len(piece) >= MIN_DECLARED_SECRET:
                out.add(piece)
    return out


def encoded_forms(value: str) -> list[str]:
    """The forms of ``value`` searched for in every view: raw, fully decoded, base64, hex."""
    raw = value.encode("utf-8")
    forms = {value, _decode_fully(value), raw.hex(), raw.hex().upper()}
    forms |= _base64_forms(raw)
    forms |= {_JOINER.sub("", f) for f in list(forms)}
    return sorted((f for f in forms if f), key=len, reverse=True)  # longest first


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _find_all(haystack: str, needle: str) -> Iterable[int]:
    i = haystack.find(needle)
    while i != -1:
        yield i
        i = haystack.find(needle, i + 1)


@dataclass
class SecretGate:
    """Known secret values (with a label each) plus the pattern list."""

    values: list[tuple[str, str]] = field(default_factory=list)
    #: SHA-256 of files known to hold no run data (the plotly.js asset, byte-identical to the
    #: installed package's copy): their names are gated, their 4.6 MiB of content is not.
    trusted_sha256: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._forms = [(label, encoded_forms(v)) for label, v in self.values]
        self._clean: dict[Path, str] = {}  # file -> sha256 when last swept clean (sweeps repeat)

    @classmethod
    def for_run(
        cls, secret_params: Mapping[str, str], secrets_file: Path | None, environ: Mapping[str, str]
    ) -> SecretGate:
        """The gate for one run. Declared values were length-checked before the run started
        (:func:`check_declared`, ``record.secret()``); a short one here is still kept, never skipped."""
        values = [(f"secret parameter {name!r}", v) for name, v in secret_params.items()]
        if secrets_file is not None and secrets_file.exists():
            for i, line in enumerate(secrets_file.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    values.append((f"record.secret() value #{i}", str(json.loads(line))))
        values += env_credentials(environ)
        return cls([(label, v) for label, v in values if v])

    def find(self, text: str) -> tuple[list[tuple[int, int]], list[str]]:
        """Original spans to redact and the labels found (values first, then patterns)."""
        spans: list[tuple[int, int]] = []
        found: list[str] = []
        for view in decoded_views(text):
            hay = view.text
            for label, forms in self._forms:
                for form in forms:
                    for i in _find_all(hay, form):
                        spans += view.spans(i, i + len(form))
                        if label not in found:
                            found.append(label)
            for label, pattern in PATTERNS.items():
                for m in pattern.finditer(hay):
                    spans += view.spans(m.start(), m.end())
                    if label not in found:
                        found.append(label)
        return _merge(spans), found

    def redact_text(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every hit (in any encoding) replaced; labels of what was found."""
        spans, found = self.find(text)
        for s, e in reversed(spans):
            text = text[:s] + REDACTED + text[e:]
        return text, found

    def redact_bytes(self, data: bytes) -> tuple[bytes, list[str]]:
        """Binary files cannot be decoded: raw UTF-8, hex and base64 bytes of each value are replaced."""
        found = []
        for label, value in self.values:
            raw = value.encode("utf-8")
            for form in {raw, raw.hex().encode(), raw.hex().upper().encode()} | {
                f.encode() for f in _base64_forms(raw)
            }:
                if form in data:
                    data = data.replace(form, REDACTED.encode())
                    if label not in found:
                        found.append(label)
        return data, found

    def redact_name(self, name: str) -> tuple[str, list[str]]:
        """A file name with hits replaced by ``REDACTED`` (no ``*``: names stay shell-friendly)."""
        new, found = self.redact_text(name)
        return new.replace(REDACTED, "REDACTED"), found

    def sweep(self, root: Path) -> list[str]:
        """Redact every file and file name under ``root`` in place; ``"<label> in <path>"`` per hit."""
        findings: list[str] = []
        for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            new_name, found = self.redact_name(path.name)
            if found:
                rel = path.relative_to(root).as_posix()
                target = path.with_name(new_name)
                n = 1
                while target.exists():
                    target = path.with_name(f"{new_name}-{n}")
                    n += 1
                path.rename(target)
                findings += [f"{label} in a file name ({self.redact_name(rel)[0]})" for label in found]
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest in self.trusted_sha256 or self._clean.get(path) == digest:
                continue
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
            if not found:
                self._clean[path] = digest
        return findings

    def scan_strings(self, items: Iterable[str]) -> bool:
        """True when any of ``items`` holds a secret (used for error messages on the console)."""
        return any(self.find(s)[1] for s in items)
