"""Fault profiles: how a release misbehaves on purpose so drills can rehearse a bad one.

Grammar (comma-separated; each kind at most once)::

    errors:5%              5 % of business requests answered with HTTP 500
    errors:2%@/v1/predict  ... only on that path (other paths are clean)
    errors:0..10%/60s      a ramp: 0 % at the first business request, 10 % after 60 s, then 10 %
    latency:+100ms         add 100 ms to every business response (also "+0.1s")
    latency:+400ms@5%      add it to 5 % of the requests only (a tail regression)
    latency:+400ms@5%@/v1/predict   ... only on that path
    crash:after=500        the process exits after serving 500 business requests
    flap:5s/5s             the errors/latency faults are on for 5 s, off for 5 s, repeating
    none                   no fault (the empty string too)

Why these forms (issue 11): real regressions are rarely "every request is slower". They hit one
path, a fraction of requests (the tail), grow with load (a ramp) or come and go (a flapping
dependency); and a baseline is rarely clean, so the same grammar describes a noisy *stable*
(the drills' ``stable_fault``). Times of ramps and flaps count from the first business request
the process serves, so a canary deployed long before it gets traffic still ramps under load.

The services read the same string from ``CLINOPS_FAULT`` so a profile means the same thing in
a drill parameter, in a local process and in a Kubernetes pod's environment; ``str(profile)``
gives the canonical form back (``parse(str(p)) == p``). This module imports nothing of the
orchestration side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .exceptions import ParameterError

__all__ = ["FaultProfile"]

_NUM = r"(\d+(?:\.\d+)?)"
_PATH = r"(/[A-Za-z0-9/_.-]{0,200})"
_ERRORS = re.compile(rf"^errors:{_NUM}%(?:@{_PATH})?$")
_RAMP = re.compile(rf"^errors:{_NUM}\.\.{_NUM}%/{_NUM}(ms|s|m)(?:@{_PATH})?$")
_LATENCY = re.compile(rf"^latency:\+{_NUM}(ms|s)(?:@{_NUM}%)?(?:@{_PATH})?$")
_CRASH = re.compile(r"^crash:after=(\d+)$")
_FLAP = re.compile(rf"^flap:{_NUM}(ms|s|m)/{_NUM}(ms|s|m)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0}

_EXPECTED = (
    "expected 'none' or a comma-separated list of errors:N% (optionally @/path), errors:A..B%/60s "
    "(a ramp), latency:+Nms (optionally @N% of requests, @/path), crash:after=N, flap:Ns/Ns"
)


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


@dataclass(frozen=True)
class FaultProfile:
    error_rate: float = 0.0  # 0..1 (the ramp's start when error_ramp_s is set)
    added_latency_s: float = 0.0
    crash_after: int | None = None
    error_path: str | None = None
    error_ramp_to: float | None = None  # 0..1 reached after error_ramp_s
    error_ramp_s: float | None = None
    latency_fraction: float = 1.0  # share of requests that get the added latency
    latency_path: str | None = None
    flap_on_s: float | None = None
    flap_off_s: float | None = None

    @property
    def is_none(self) -> bool:
        return (self.error_rate == 0 and not self.error_ramp_to and self.added_latency_s == 0
                and self.crash_after is None)

    @property
    def timed(self) -> bool:
        """Whether the profile changes over time (a ramp or a flap)."""
        return self.error_ramp_s is not None or self.flap_on_s is not None

    def active(self, elapsed_s: float) -> bool:
        """Whether errors/latency apply ``elapsed_s`` after the first business request (flap)."""
        if self.flap_on_s is None or self.flap_off_s is None:
            return True
        return elapsed_s % (self.flap_on_s + self.flap_off_s) < self.flap_on_s

    def error_probability(self, path: str, elapsed_s: float) -> float:
        if self.error_path is not None and path != self.error_path:
            return 0.0
        if not self.active(elapsed_s):
            return 0.0
        if self.error_ramp_s is not None and self.error_ramp_to is not None:
            share = min(1.0, max(0.0, elapsed_s / self.error_ramp_s))
            return self.error_rate + (self.error_ramp_to - self.error_rate) * share
        return self.error_rate

    def latency_for(self, path: str, elapsed_s: float, u: float) -> float:
        """Added seconds for one request; ``u`` is a uniform draw in [0, 1) from the seeded RNG."""
        if not self.added_latency_s or (self.latency_path is not None and path != self.latency_path):
            return 0.0
        if not self.active(elapsed_s) or u >= self.latency_fraction:
            return 0.0
        return self.added_latency_s

    @property
    def paths(self) -> set[str]:
        """The paths the profile names (a drill checks that its service serves them)."""
        return {p for p in (self.error_path, self.latency_path) if p is not None}

    @classmethod
    def parse(cls, text: str | None, *, parameter: str = "fault") -> FaultProfile:
        """Parse a profile; a bad one raises :class:`ParameterError` naming ``parameter``."""
        if text is None:
            return cls()
        text = text.strip()
        if text in ("", "none"):
            return cls()
        fields: dict[str, object] = {}
        seen: set[str] = set()

        def bad(msg: str) -> ParameterError:
            return ParameterError(parameter, msg)

        def rate(value: str, what: str) -> float:
            r = float(value) / 100
            if not 0 <= r <= 1:
                raise bad(f"{what} {value}% must be between 0% and 100%")
            return r

        for raw in text.split(","):
            part = raw.strip().replace(" ", "")
            kind = part.split(":", 1)[0]
            if kind in seen:
                raise bad(f"{kind!r} given twice in {text!r}")
            seen.add(kind)
            if m := _ERRORS.match(part):
                fields["error_rate"] = rate(m.group(1), "error rate")
                fields["error_path"] = m.group(2)
            elif m := _RAMP.match(part):
                start, end = rate(m.group(1), "ramp start"), rate(m.group(2), "ramp end")
                secs = float(m.group(3)) * _UNIT[m.group(4)]
                if not 0 < secs <= 3600:
                    raise bad(f"ramp duration in {part!r} must be in (0, 1h]")
                if end < start:
                    raise bad(f"ramp {part!r} must not decrease (start {m.group(1)}% > end {m.group(2)}%)")
                fields.update(error_rate=start, error_ramp_to=end, error_ramp_s=secs, error_path=m.group(5))
            elif m := _LATENCY.match(part):
                value = float(m.group(1)) * _UNIT[m.group(2)]
                if not 0 < value <= 60:
                    raise bad(f"added latency {part!r} must be in (0, 60s]")
                frac = 1.0 if m.group(3) is None else rate(m.group(3), "latency share")
                if frac == 0:
                    raise bad(f"latency share in {part!r} must be above 0%")
                fields.update(added_latency_s=value, latency_fraction=frac, latency_path=m.group(4))
            elif m := _CRASH.match(part):
                crash = int(m.group(1))
                if crash < 1:
                    raise bad("crash:after=N needs N >= 1")
                fields["crash_after"] = crash
            elif m := _FLAP.match(part):
                on = float(m.group(1)) * _UNIT[m.group(2)]
                off = float(m.group(3)) * _UNIT[m.group(4)]
                if not (0 < on <= 3600 and 0 < off <= 3600):
                    raise bad(f"flap periods in {part!r} must be in (0, 1h]")
                fields.update(flap_on_s=on, flap_off_s=off)
            else:
                raise bad(f"cannot parse {part!r} in {text!r}; {_EXPECTED}")
        if "flap" in seen and not ({"errors", "latency"} & seen):
            raise bad(f"flap in {text!r} needs an errors or latency fault to switch on and off")
        return cls(**fields)  # type: ignore[arg-type]

    def __str__(self) -> str:
        parts = []
        at = f"@{self.error_path}" if self.error_path else ""
        if self.error_ramp_s is not None and self.error_ramp_to is not None:
            parts.append(f"errors:{self.error_rate * 100:g}..{self.error_ramp_to * 100:g}%/"
                         f"{_fmt_s(self.error_ramp_s)}{at}")
        elif self.error_rate:
            parts.append(f"errors:{self.error_rate * 100:g}%{at}")
        if self.added_latency_s:
            frac = f"@{self.latency_fraction * 100:g}%" if self.latency_fraction < 1 else ""
            path = f"@{self.latency_path}" if self.latency_path else ""
            parts.append(f"latency:+{self.added_latency_s * 1000:g}ms{frac}{path}")
        if self.crash_after is not None:
            parts.append(f"crash:after={self.crash_after}")
        if self.flap_on_s is not None and self.flap_off_s is not None:
            parts.append(f"flap:{_fmt_s(self.flap_on_s)}/{_fmt_s(self.flap_off_s)}")
        return ",".join(parts) or "none"
