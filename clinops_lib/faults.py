"""Fault profiles: how a release misbehaves on purpose so drills can rehearse a bad one.

Grammar (comma-separated, each part at most once)::

    errors:5%            add 5 % HTTP 500 responses
    latency:+100ms       add 100 ms to every response (also "+0.1s")
    crash:after=500      the process exits after serving 500 requests
    none                 no fault (the empty string too)

The services read the same string from ``CLINOPS_FAULT`` so a profile means the same thing
in a drill parameter, in a local process and in a Kubernetes pod's environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .exceptions import ParameterError

__all__ = ["FaultProfile"]

_ERRORS = re.compile(r"^errors:(\d+(?:\.\d+)?)%$")
_LATENCY = re.compile(r"^latency:\+(\d+(?:\.\d+)?)(ms|s)$")
_CRASH = re.compile(r"^crash:after=(\d+)$")


@dataclass(frozen=True)
class FaultProfile:
    error_rate: float = 0.0  # 0..1
    added_latency_s: float = 0.0
    crash_after: int | None = None

    @property
    def is_none(self) -> bool:
        return self.error_rate == 0 and self.added_latency_s == 0 and self.crash_after is None

    @classmethod
    def parse(cls, text: str | None, *, parameter: str = "fault") -> FaultProfile:
        """Parse a profile; a bad one raises :class:`ParameterError` naming ``parameter``."""
        if text is None:
            return cls()
        text = text.strip()
        if text in ("", "none"):
            return cls()
        error_rate, latency, crash = 0.0, 0.0, None
        seen: set[str] = set()
        for raw in text.split(","):
            part = raw.strip().replace(" ", "")
            kind = part.split(":", 1)[0]
            if kind in seen:
                raise ParameterError(parameter, f"{kind!r} given twice in {text!r}")
            seen.add(kind)
            if m := _ERRORS.match(part):
                error_rate = float(m.group(1)) / 100
                if not 0 <= error_rate <= 1:
                    raise ParameterError(parameter, f"error rate {m.group(1)}% must be between 0% and 100%")
            elif m := _LATENCY.match(part):
                value = float(m.group(1))
                latency = value / 1000 if m.group(2) == "ms" else value
                if latency > 60:
                    raise ParameterError(parameter, f"added latency {part!r} must be at most 60s")
            elif m := _CRASH.match(part):
                crash = int(m.group(1))
                if crash < 1:
                    raise ParameterError(parameter, "crash:after=N needs N >= 1")
            else:
                raise ParameterError(
                    parameter,
                    f"cannot parse {part!r} in {text!r}; expected 'none' or a comma-separated list of "
                    "errors:N%, latency:+Nms (or +Ns), crash:after=N",
                )
        return cls(error_rate, latency, crash)

    def __str__(self) -> str:
        parts = []
        if self.error_rate:
            parts.append(f"errors:{self.error_rate * 100:g}%")
        if self.added_latency_s:
            parts.append(f"latency:+{self.added_latency_s * 1000:g}ms")
        if self.crash_after is not None:
            parts.append(f"crash:after={self.crash_after}")
        return ",".join(parts) or "none"
