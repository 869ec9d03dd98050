"""Child-process supervision for the local target.

Each component runs as a detached process in its own session (so it survives the
``clinops up`` process and one ``killpg`` reaches its whole tree), writes stdout+stderr to a
log file under the state dir, and is remembered by a pid file holding the pid *and* the
kernel's start time of that pid, so ``down`` in another process never signals a recycled pid.

Waits always say what they waited for: success condition, failure condition, timeout.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...config import child_environment
from ...exceptions import ComponentError, PortInUseError, PrerequisiteError, WaitFailed, WaitTimeout

__all__ = [
    "ProcessSpec",
    "RunningProcess",
    "is_alive",
    "log_tail",
    "port_in_use",
    "process_tree",
    "read_pid_file",
    "rss_bytes",
    "start",
    "stop",
    "wait_for",
    "wait_healthy",
]

# Children started by *this* process, kept so they can be reaped (no zombies in tests).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# The exit status of those reaped by is_alive, for the error that says a component exited.
_EXIT_STATUS: dict[int, int] = {}


@dataclass
class ProcessSpec:
    """How to run one component: command line, environment, log and pid file, ports, user."""

    name: str
    argv: Sequence[str]
    log_file: Path
    pid_file: Path
    ports: Sequence[int] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None  # run as this system user (postgres refuses to run as root)
    stop_signal: int = signal.SIGTERM
    signal_group: bool = True  # send stop_signal to the whole process group


@dataclass
class RunningProcess:
    name: str
    pid: int
    start_ticks: int
    log_file: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "log_file": self.log_file,
        }


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on ``host:port`` (a bind with SO_REUSEADDR fails).

    SO_REUSEADDR makes sockets left in TIME_WAIT by a just-stopped component not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when it does not exist/is a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """The process exists, is not a zombie and (if given) is the one we started."""
    child = _CHILDREN.get(pid)
    if child is not None and (code := child.poll()) is not None:
        _CHILDREN.pop(pid, None)
        _EXIT_STATUS[pid] = code
        return False
    ticks = _start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


def read_pid_file(path: Path) -> RunningProcess | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return RunningProcess(
        str(data["name"]), int(data["pid"]), int(data["start_ticks"]), str(data["log_file"])
    )


def start(spec: ProcessSpec) -> RunningProcess:
    """Start ``spec`` detached; raise before starting when a port is taken or the binary is missing."""
    for port in spec.ports:
        if port_in_use(port):
            raise PortInUseError(
                spec.name, f"port 127.0.0.1:{port} is already in use by another process", str(spec.log_file)
            )
    binary = spec.argv[0]
    if not (os.path.isabs(binary) and os.access(binary, os.X_OK)) and not _which(binary):
        raise PrerequisiteError(f"{spec.name}: binary {binary!r} not found (log: {spec.log_file})")
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    spec.pid_file.parent.mkdir(parents=True, exist_ok=True)
    env = child_environment(spec.env)
    kwargs: dict[str, object] = {}
    if spec.user and os.geteuid() == 0:
        pw = pwd.getpwnam(spec.user)
        kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        env.update(HOME=pw.pw_dir, USER=spec.user, LOGNAME=spec.user)
    with open(spec.log_file, "ab") as log:
        log.write(
            f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {spec.name}: "
            f"{' '.join(spec.argv)}\n".encode()
        )
        log.flush()
        try:
            proc = subprocess.Popen(  # type: ignore[call-overload]
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(spec.cwd) if spec.cwd else None,
                start_new_session=True,
                **kwargs,
            )
        except OSError as e:
            raise ComponentError(spec.name, f"could not start {binary}: {e}", str(spec.log_file)) from e
    _CHILDREN[proc.pid] = proc
    _EXIT_STATUS.pop(proc.pid, None)  # a reused pid must not report an earlier process's status
    ticks = _start_ticks(proc.pid) or 0
    running = RunningProcess(spec.name, proc.pid, ticks, str(spec.log_file))
    spec.pid_file.write_text(json.dumps(running.to_json()))
    return running


def _which(binary: str) -> bool:
    from shutil import which

    return which(binary) is not None


def wait_for(
    what: str,
    ok: Callable[[], bool],
    *,
    failed: Callable[[], str | None] | None = None,
    timeout: float,
    interval: float = 0.1,
) -> float:
    """Poll until ``ok()``; ``failed()`` returning a reason raises WaitFailed; else WaitTimeout.

    Returns the seconds waited.
    """
    t0 = time.monotonic()
    last_error = ""
    while True:
        if failed is not None and (reason := failed()):
            raise WaitFailed(f"while waiting for {what}: {reason}")
        try:
            if ok():
                return time.monotonic() - t0
        except Exception as e:  # noqa: BLE001 - a probe error is "not yet", kept for the message
            last_error = f"{type(e).__name__}: {e}"
        if time.monotonic() - t0 >= timeout:
            seen = f"; last probe error: {last_error}" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}{seen}")
        time.sleep(interval)


def wait_healthy(proc: RunningProcess, check: Callable[[], bool], timeout: float, what: str,
                 *, gave_up: Callable[[], str | None] | None = None) -> float:
    """Wait for a started component's health check; errors name the component and its log.

    ``gave_up`` (optional) says why a *running* component will never become healthy (Kafka
    Connect with a FAILED task keeps its JVM up): the wait ends at once instead of at ``timeout``.
    """
    given_up: list[str] = []

    def exited() -> str | None:
        if is_alive(proc.pid, proc.start_ticks):
            reason = gave_up() if gave_up is not None else None
            if reason:
                given_up.append(reason)
            return reason
        child = _CHILDREN.get(proc.pid)
        code = child.poll() if child is not None else _EXIT_STATUS.pop(proc.pid, None)
        return f"process {proc.pid} exited" + (f" with status {code}" if code is not None else "")

    try:
        return wait_for(f"{proc.name} {what}", check, failed=exited, timeout=timeout, interval=0.1)
    except WaitFailed as e:
        if given_up:
            raise ComponentError(proc.name, f"will not become healthy: {given_up[0]}", proc.log_file) from e
        raise ComponentError(proc.name, f"exited before it was healthy ({e}){log_tail(proc.log_file)}",
                             proc.log_file) from e
    except WaitTimeout as e:
        raise ComponentError(proc.name, f"not healthy within {timeout:g}s ({e}){log_tail(proc.log_file)}",
                             proc.log_file) from e


def log_tail(log_file: str | Path | None, *, lines: int = 15, max_chars: int = 3000) -> str:
    """The last lines of a component's log, for the error that says it failed (else "").

    Why: the log lives in a state directory that a CI machine deletes with the run, so an error
    that only *named* the log (a Kafka broker that exited at start on CI's machine) could not be
    diagnosed afterwards. The tail is a few lines, read from the end, never the whole file.
    """
    if not log_file:
        return ""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").rstrip()
    if not text:
        return "; its log is empty"
    tail = "\n".join(text.splitlines()[-lines:])[-max_chars:]
    return f"; last lines of its log:\n{tail}"


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of resident set sizes of ``pids`` (missing processes count 0)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop(
    proc: RunningProcess,
    *,
    stop_signal: int = signal.SIGTERM,
    signal_group: bool = True,
    timeout: float = 10.0,
) -> bool:
    """Stop a component: ``stop_signal``, wait, then SIGKILL to its whole process group.

    Returns True if it had to be killed. Descendants that left the group are killed too.
    """
    killed = False
    if is_alive(proc.pid, proc.start_ticks):
        tree = process_tree(proc.pid)
        _signal(proc.pid, stop_signal, signal_group)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and is_alive(proc.pid, proc.start_ticks):
            time.sleep(0.05)
        if is_alive(proc.pid, proc.start_ticks):
            killed = True
            _signal(proc.pid, signal.SIGKILL, True)
        for p in tree[1:]:
            if _start_ticks(p) is not None:
                _signal(p, signal.SIGKILL, False)
        end = time.monotonic() + 5
        while time.monotonic() < end and is_alive(proc.pid, proc.start_ticks):
            time.sleep(0.05)
        # the process group may still hold members (e.g. postgres backends) for an instant
        end = time.monotonic() + 5
        while time.monotonic() < end and any(_start_ticks(p) is not None for p in tree):
            time.sleep(0.05)
    child = _CHILDREN.pop(proc.pid, None)
    if child is not None:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return killed
