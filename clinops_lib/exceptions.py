"""Every error clinops raises on purpose.

One base class, specific subclasses; third-party errors (papermill, boto3, kubernetes,
helm_python, httpx, subprocess) are converted where they enter the library with
``raise ... from e`` so the original stays attached for the log.

Tree::

    ClinopsError
    ├── ConfigError                    bad settings, missing key file, unknown target
    │   └── StateFileError             the local target's state file is unreadable or of a newer version
    ├── ParameterError                 a runbook/drill parameter is unknown, mistyped or out of range (exit 2)
    ├── RunbookError                   a runbook cell failed (carries cell index, source, error)
    ├── EvidenceError
    │   ├── SecretLeakError            the secret gate found a secret in a bundle
    │   └── VerificationError          a sealed bundle or archive no longer verifies
    ├── TargetError                    anything a target (local or Kubernetes) could not do
    │   ├── PrerequisiteError          a binary, docker, kind, kubeconfig or context is missing
    │   ├── BuildError                 building a cluster binary failed (names the step + log file)
    │   ├── ComponentError             a component failed to start/stop (names component + log file)
    │   │   └── PortInUseError
    │   ├── WaitTimeout                a wait ran out of time (says what it waited for)
    │   ├── WaitFailed                 a wait's failure condition became true
    │   ├── TrafficError               weights could not be applied (HAProxy socket, Istio, Rollout)
    │   ├── MetricsError               Prometheus unreachable or a query failed
    │   └── KubernetesAPIError         an API call failed (names verb, kind, namespace/name, status)
    ├── InventoryError                 the AWS inventory is invalid or could not be applied
    ├── ChartError                     Helm render/lint failed
    ├── ServiceError                   a service/job could not load, train or store its model
    └── DrillError                     a drill could not run (not a verdict: ABORTED is a result)
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ChartError",
    "ClinopsError",
    "ComponentError",
    "ConfigError",
    "DrillError",
    "EvidenceError",
    "InventoryError",
    "KubernetesAPIError",
    "MetricsError",
    "ParameterError",
    "PortInUseError",
    "PrerequisiteError",
    "RunbookError",
    "SecretLeakError",
    "ServiceError",
    "StateFileError",
    "TargetError",
    "TrafficError",
    "VerificationError",
    "WaitFailed",
    "WaitTimeout",
]


class ClinopsError(Exception):
    """Base class of every error clinops raises on purpose."""


class ConfigError(ClinopsError):
    """Settings are invalid: unknown target, unreadable key file, bad port, ..."""


class StateFileError(ConfigError):
    """The local target's state file cannot be used: not JSON, a field of the wrong shape, or
    written by a newer clinops. Names the file; raised before anything is started or stopped
    (exit 2, like any bad input), because acting on a state it cannot read would orphan processes."""

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        super().__init__(f"state file {self.path}: {message}")


class ParameterError(ClinopsError):
    """A parameter is unknown, of the wrong type, out of range or not allowed.

    Raised before anything runs; the CLI turns it into exit status 2.
    """

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"parameter {name!r}: {message}")


class RunbookError(ClinopsError):
    """A runbook cell failed. Carries where and what, like papermill's PapermillExecutionError."""

    def __init__(self, message: str, *, cell_index: int | None = None, source: str = "",
                 ename: str = "", evalue: str = "", bundle: str | None = None) -> None:
        self.cell_index = cell_index
        self.source = source
        self.ename = ename
        self.evalue = evalue
        self.bundle = bundle
        super().__init__(message)


class EvidenceError(ClinopsError):
    """An evidence bundle could not be written, sealed or read."""


class SecretLeakError(EvidenceError):
    """The secret gate found a secret value or pattern; what was kept is redacted."""

    def __init__(self, message: str, findings: list[str] | None = None) -> None:
        self.findings = findings or []
        super().__init__(message)


class VerificationError(EvidenceError):
    """A bundle or an archive does not verify; ``problems`` names each file and link."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)


class TargetError(ClinopsError):
    """A target could not do what was asked."""


class PrerequisiteError(TargetError):
    """Something the target needs is missing (a binary, docker, kind, a kubeconfig, a context)."""


class BuildError(TargetError):
    """A step of building the cluster's binaries failed; names the step and its log file."""

    def __init__(self, step: str, detail: str, log_file: str | None = None) -> None:
        self.step = step
        self.detail = detail
        self.log_file = log_file
        where = f" (log: {log_file})" if log_file else ""
        super().__init__(f"build step {step!r}: {detail}{where}")


class ComponentError(TargetError):
    """A component failed to start, stop or pass its health check."""

    def __init__(self, component: str, message: str, log_file: str | None = None) -> None:
        self.component = component
        self.log_file = log_file
        where = f" (log: {log_file})" if log_file else ""
        super().__init__(f"{component}: {message}{where}")


class PortInUseError(ComponentError):
    """The port a component needs is already taken by another process."""


class WaitTimeout(TargetError):
    """A wait ran out of time; the message says what it waited for and what it last saw."""


class WaitFailed(TargetError):
    """A wait's failure condition became true before its success condition."""


class TrafficError(TargetError):
    """Traffic weights could not be read or applied."""


class MetricsError(TargetError):
    """Prometheus could not be reached or a query failed."""


class KubernetesAPIError(TargetError):
    """A Kubernetes API call failed; names the verb, the object and the HTTP status."""

    def __init__(self, verb: str, obj: str, status: int | None, reason: str) -> None:
        self.verb = verb
        self.obj = obj
        self.status = status
        self.reason = reason
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{verb} {obj} failed{code}: {reason}")


class InventoryError(ClinopsError):
    """The AWS inventory is invalid or could not be applied."""


class ChartError(ClinopsError):
    """A Helm chart failed to render or lint."""


class ServiceError(ClinopsError):
    """A platform workload (gateway, serving, training job) could not read or write what it needs:
    a model artifact missing, corrupt or failing its integrity check, an S3 upload refused."""


class DrillError(ClinopsError):
    """A drill could not be carried out (an ABORTED verdict is a result, not this error)."""
