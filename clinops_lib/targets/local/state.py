"""What the local target remembers between processes: typed records and their versioned file.

``clinops up`` starts the platform, ``clinops status``/``abort``/``down`` run later in other
processes, so every pid, version, weight and timing lives in ``<state_dir>/local-target.json``.
In memory it is a :class:`LocalState` of small dataclasses (one per kind of thing the target
started), so the target, the CLI and the tests read ``state.components["redis"].pid``
instead of guessing keys of a ``dict[str, Any]``.

The on-disk form carries ``"version"``:

* **absent** — the form written before the typed state (session 2): the same fields, unversioned.
  It is *migrated* on load (every field maps one to one onto version 1) and written back as
  version 1 by the next save; refusing it would orphan the processes of a platform that is up.
* **1** — this form (:data:`STATE_VERSION`).
* **newer** — *refused* with :class:`~clinops_lib.exceptions.StateFileError` naming the file:
  it was written by a newer clinops, and this one would drop the fields it does not know on its
  next save and lose track of processes. A file that is not JSON or whose fields have the wrong
  shape is refused the same way (naming the field); a missing file is an empty platform.

Writes are atomic: the JSON goes to a temporary file in the same directory, is fsync'ed and
renamed over the old file, so an interruption at any point (a signal, ``kill -9``, a full disk)
leaves the last complete state, never half of one. :meth:`StateStore.locked` holds an exclusive
``flock`` on ``<state_dir>/.lock`` for the whole read-modify-write and saves also when the body
raises, so processes an interrupted ``up`` had started before its error are remembered (and
stopped by ``down``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from ...exceptions import StateFileError
from . import supervisor as sup

__all__ = [
    "STATE_FILE",
    "STATE_VERSION",
    "ComponentRecord",
    "JobRecord",
    "LocalState",
    "PipelineRunRecord",
    "ProcessRecord",
    "ServiceRecord",
    "StateStore",
    "TrackRecord",
    "TrainingRecord",
    "Weights",
    "make_record",
]

STATE_FILE = "local-target.json"
#: The on-disk form this code writes; see the module docstring for older and newer forms.
STATE_VERSION = 1

TrackName = Literal["stable", "canary"]
_R = TypeVar("_R")


@dataclass(kw_only=True)
class ProcessRecord:
    """A supervised process: who it is (pid + kernel start ticks, so a recycled pid is never
    taken for it), where it logs, and when it started and became healthy/ready."""

    name: str
    pid: int
    start_ticks: int
    log_file: str = ""
    started_at: float
    ready_at: float | None = None
    version: str = ""
    endpoint: str = ""

    def process(self) -> sup.RunningProcess:
        return sup.RunningProcess(self.name, self.pid, self.start_ticks, self.log_file)

    def alive(self) -> bool:
        return sup.is_alive(self.pid, self.start_ticks)


@dataclass(kw_only=True)
class ComponentRecord(ProcessRecord):
    """An infrastructure or pipeline component (PostgreSQL, HAProxy, Kafka ...) and its level."""

    level: int


@dataclass(kw_only=True)
class TrackRecord(ProcessRecord):
    """One track (stable/canary) of a service; ``fault`` is the fault profile it runs with."""

    fault: str = "none"


@dataclass
class ServiceRecord:
    """The two tracks of one service; ``None`` is a track that is not running."""

    stable: TrackRecord | None = None
    canary: TrackRecord | None = None

    def track(self, track: TrackName) -> TrackRecord | None:
        return self.stable if track == "stable" else self.canary

    def set(self, track: TrackName, record: TrackRecord | None) -> None:
        if track == "stable":
            self.stable = record
        else:
            self.canary = record


@dataclass
class Weights:
    """HAProxy weights of a service's two servers as last set (percent; stored as ``[stable, canary]``)."""

    stable: int = 100
    canary: int = 0


@dataclass
class TrainingRecord:
    """The last run of the Level 4 training job."""

    exit: int
    started_at: float
    ready_at: float
    version: str = ""
    log_file: str = ""


@dataclass
class JobRecord:
    """A batch job of the pipeline DAG whose runtime was checked by ``up`` (Level 2's Spark)."""

    started_at: float
    ready_at: float


@dataclass
class PipelineRunRecord:
    """The last DAG run of a batch job (from Airflow's task instance)."""

    run_id: str
    state: str | None
    started_at: float | None = None
    ended_at: float | None = None
    duration: float | None = None
    log_file: str = ""


@dataclass
class LocalState:
    """Everything the local target started, by name."""

    components: dict[str, ComponentRecord] = field(default_factory=dict)
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    weights: dict[str, Weights] = field(default_factory=dict)
    training: TrainingRecord | None = None
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    pipeline_runs: dict[str, PipelineRunRecord] = field(default_factory=dict)

    def service(self, name: str) -> ServiceRecord:
        """The service's record, created empty when the service never ran."""
        return self.services.setdefault(name, ServiceRecord())

    def track(self, service: str, track: TrackName) -> TrackRecord | None:
        svc = self.services.get(service)
        return svc.track(track) if svc is not None else None

    def weight(self, service: str) -> Weights:
        return self.weights.get(service) or Weights()

    # -- the on-disk form ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["weights"] = {k: [w.stable, w.canary] for k, w in self.weights.items()}
        doc["version"] = STATE_VERSION
        return doc

    @classmethod
    def from_json(cls, doc: Any, source: Path) -> LocalState:
        """Read any supported form (see the module docstring); :class:`StateFileError` otherwise."""
        if not isinstance(doc, dict):
            raise StateFileError(source, f"expected a JSON object, found {type(doc).__name__}")
        version = doc.get("version")
        if version is None:
            doc = _migrate_unversioned(doc)
        elif not _is_int(version) or version < 1:
            raise StateFileError(source, f"version {version!r} is not a state version (1..{STATE_VERSION})")
        elif version > STATE_VERSION:
            raise StateFileError(
                source,
                f"written by a newer clinops (state version {version}; this one reads up to "
                f"{STATE_VERSION}); "
                "use that clinops (its `clinops down` stops the platform), or stop the processes "
                f"named in {source.parent / 'run'}/*.pid and remove the file",
            )
        reader = _Reader(source)
        return cls(
            components=reader.mapping(doc, "components", lambda d, p: reader.record(ComponentRecord, d, p)),
            services=reader.mapping(doc, "services", reader.service),
            weights=reader.mapping(doc, "weights", reader.weights),
            training=reader.optional(doc, "training", lambda d, p: reader.record(TrainingRecord, d, p)),
            jobs=reader.mapping(doc, "jobs", lambda d, p: reader.record(JobRecord, d, p)),
            pipeline_runs=reader.mapping(
                doc, "pipeline_runs", lambda d, p: reader.record(PipelineRunRecord, d, p)
            ),
        )


def _migrate_unversioned(doc: dict[str, Any]) -> dict[str, Any]:
    """The unversioned form (before the typed state) has version 1's fields: nothing to rename."""
    return {**doc, "version": 1}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Reader:
    """Turns the JSON of one state file into records; every error names the file and the field."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> StateFileError:
        return StateFileError(self.source, f"field {path}: {message}")

    def mapping(self, doc: Mapping[str, Any], key: str, read: Any) -> dict[str, Any]:
        raw = doc.get(key)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected an object, found {type(raw).__name__}")
        return {str(name): read(value, f"{key}.{name}") for name, value in raw.items()}

    def optional(self, doc: Mapping[str, Any], key: str, read: Any) -> Any:
        raw = doc.get(key)
        return None if raw is None else read(raw, key)

    def record(self, cls: type[_R], raw: Any, path: str) -> _R:
        if not isinstance(raw, dict):
            raise self.fail(path, f"expected an object, found {type(raw).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        try:
            rec = cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as e:  # a required field is missing
            raise self.fail(path, str(e).split(".", 1)[-1].strip()) from e
        if isinstance(rec, ProcessRecord) and not (
            _is_int(rec.pid) and _is_int(rec.start_ticks) and isinstance(rec.started_at, int | float)
        ):
            raise self.fail(path, "pid and start_ticks must be integers, started_at a number")
        return rec

    def service(self, raw: Any, path: str) -> ServiceRecord:
        if not isinstance(raw, dict):
            raise self.fail(path, f"expected an object, found {type(raw).__name__}")
        tracks = {
            t: None if raw.get(t) is None else self.record(TrackRecord, raw[t], f"{path}.{t}")
            for t in ("stable", "canary")
        }
        return ServiceRecord(**tracks)

    def weights(self, raw: Any, path: str) -> Weights:
        if (not isinstance(raw, list) or len(raw) != 2
                or not all(isinstance(w, int) and 0 <= w <= 100 for w in raw)):
            raise self.fail(path, f"expected [stable, canary] percentages, found {raw!r}")
        return Weights(raw[0], raw[1])


class StateStore:
    """The state file of one state dir: load, atomic save, and a locked read-modify-write."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @property
    def path(self) -> Path:
        return self.state_dir / STATE_FILE

    def load(self) -> LocalState:
        """The state as last saved; an empty state when there is no file."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return LocalState()
        except OSError as e:
            raise StateFileError(self.path, f"cannot be read: {e.strerror or e}") from e
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise StateFileError(self.path, f"is not JSON ({e})") from e
        return LocalState.from_json(doc, self.path)

    def save(self, state: LocalState) -> None:
        """Write atomically (temporary file, fsync, rename): readers see the old or the new state."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{STATE_FILE}.tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(state.to_json(), indent=2, sort_keys=True))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[LocalState]:
        """Load under an exclusive lock, yield, save (also when the body raises)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.load()
            try:
                yield state
            finally:
                self.save(state)



def make_record(cls: type[_R], proc: sup.RunningProcess, **extra: Any) -> _R:
    """A record of ``cls`` for a process just started (``extra``: started_at, level, version ...)."""
    return cls(**proc.to_json(), **extra)
