"""Interruption is an abort, never a limbo: real signals to a real ``clinops run`` subprocess.

Two levels:

* a small notebook whose cell sleeps: SIGTERM, SIGINT to the whole process group (what Ctrl-C
  in a terminal does) and SIGHUP each stop the kernel, no later cell runs (even when the
  interrupted cell swallows the KeyboardInterrupt), a FAILED bundle says "interrupted by
  signal N at cell K", the exit status is 128+N, and neither the kernel nor the scratch copy of
  the executed notebook outlives the run;
* the canary drill on the real local platform, signalled while the canary has traffic: all
  traffic is back on stable and the canary stopped, as ``clinops status`` shows. A run killed
  with SIGKILL (which no program can handle) leaves a stray canary: ``clinops up`` names it and
  offers ``clinops abort SERVICE``, which sends all traffic to stable and stops it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SharedPlatform, write_notebook

ROOT = Path(__file__).resolve().parent.parent
CLINOPS = [sys.executable, "-m", "clinops_lib.cli"]
CANARY = str(ROOT / "runbooks" / "02-canary-drill.ipynb")
SERVICE = "clinical-gateway"


def _wait(what: str, predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"clinops run exited ({proc.returncode}) before {what}\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmd and stat[stat.rindex(")") + 2] != "Z":
            found.append(f"{entry.name}: {cmd[:160]}")
    return found


def _send(proc: subprocess.Popen[str], sig: int, to_group: bool) -> None:
    if to_group:
        os.killpg(proc.pid, sig)  # the run leads its own group (start_new_session), like a shell job
    else:
        proc.send_signal(sig)


def _bundle(stdout: str) -> Path:
    m = re.search(r"^bundle: (.+)$", stdout, re.M)
    assert m, stdout
    return Path(m.group(1).strip())


# -- a sleeping cell --------------------------------------------------------------------------------
@pytest.mark.component
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("sig", "to_group", "swallow"),
    [
        (signal.SIGTERM, False, False),
        (signal.SIGINT, True, False),
        (signal.SIGHUP, False, False),
        (signal.SIGTERM, False, True),
    ],
    ids=["SIGTERM", "SIGINT-to-group", "SIGHUP", "SIGTERM-cell-swallows-KeyboardInterrupt"],
)
def test_signal_stops_the_kernel_and_seals_a_failed_bundle(
    sig: int, to_group: bool, swallow: bool, tmp_path: Path
) -> None:
    started, after = tmp_path / "started", tmp_path / "after"
    sleeping = f"import time\nopen({str(started)!r}, 'w').close()\n"
    sleeping += (
        "try:\n    time.sleep(240)\nexcept KeyboardInterrupt:\n    print('swallowed')\n"
        if swallow
        else "time.sleep(240)\n"
    )
    nb = write_notebook(
        tmp_path / "sleepy.ipynb", ["x = 1", sleeping, f"open({str(after)!r}, 'w').close()"], "n = 1  # int"
    )
    scratch_root, runtime = tmp_path / "tmp", tmp_path / "runtime"
    scratch_root.mkdir()
    runtime.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_root), "JUPYTER_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen(
        [*CLINOPS, "run", str(nb), "--out", str(tmp_path / "evidence"), "--no-progress"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        _wait("the sleeping cell to start", started.exists, 120, proc)
        _send(proc, sig, to_group)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + sig, f"exit {proc.returncode}\n{out}\n{err}"
    assert "Traceback" not in err, err
    assert not after.exists(), "a cell after the interrupted one ran"
    bundle = _bundle(out)
    verdict = json.loads((bundle / "verdict.json").read_text())
    assert verdict["verdict"] == "FAILED"
    # cell 3: the sleeping cell's index in the runbook file, as its author sees it in JupyterLab
    assert f"interrupted by signal {sig} at cell 3" in " ".join(verdict["reasons"]), verdict["reasons"]
    assert f"interrupted by signal {sig}" in (bundle / "SUMMARY.md").read_text()
    assert _processes_mentioning(str(runtime)) == [], "the kernel outlived the run"
    assert list(scratch_root.glob("clinops-run-*")) == [], "the scratch copy outlived the run"
    assert subprocess.run([*CLINOPS, "evidence", "verify", str(bundle)], capture_output=True).returncode == 0


@pytest.mark.component
@pytest.mark.timeout(300)
def test_a_killed_runner_leaves_no_scratch_copy_for_long(tmp_path: Path) -> None:
    """SIGKILL cannot be handled: the next run removes the scratch copy a killed run left."""
    started = tmp_path / "started"
    nb = write_notebook(
        tmp_path / "sleepy.ipynb", [f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(240)"]
    )
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_root)}
    cmd = [*CLINOPS, "run", str(nb), "--out", str(tmp_path / "evidence"), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait("the sleeping cell to start", started.exists, 120, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert list(scratch_root.glob("clinops-run-*")), "precondition: the killed run left its scratch dir"
    ok = write_notebook(tmp_path / "ok.ipynb", ["print('fine')"])
    done = subprocess.run([*CLINOPS, "run", str(ok), "--out", str(tmp_path / "evidence"), "--no-progress"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(scratch_root.glob("clinops-run-*")) == []


# -- the canary drill on the real platform ------------------------------------------------------------
@dataclass
class Platform:
    env: dict[str, str]
    tmp: Path

    def clinops(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLINOPS, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def tracks(self) -> dict[tuple[str, str], dict[str, object]]:
        proc = self.clinops("status", "--json", timeout=120)
        doc = json.loads(proc.stdout)
        return {(t["service"], t["track"]): t for t in doc["tracks"]}

    def run_drill(self, *params: str) -> subprocess.Popen[str]:
        args = [a for p in params for a in ("-p", *p.split("=", 1))]
        return subprocess.Popen(
            [*CLINOPS, "run", CANARY, *args, "--out", str(self.tmp / "evidence"), "--no-progress"],
            env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def platform(local_platform: Callable[[Iterable[int]], SharedPlatform], tmp_path_factory) -> Platform:
    """The session's one local platform (conftest.py), Levels 0, 1, 4 and 6 up; evidence of its own."""
    shared = local_platform([0, 1, 4, 6])
    return Platform({**shared.env, "CLINOPS_EVIDENCE_DIR": str(tmp_path_factory.mktemp("interrupt"))},
                    tmp_path_factory.mktemp("interrupt-runs"))


def _canary_runs(p: Platform) -> bool:
    t = p.tracks().get((SERVICE, "canary"))
    return bool(t and t["running"])


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_sigterm_mid_drill_puts_all_traffic_back_on_stable(platform: Platform) -> None:
    proc = platform.run_drill("pause_scale=1")
    try:
        _wait("the canary to run", lambda: _canary_runs(platform), 300, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, f"{out}\n{err}"
    verdict = json.loads((_bundle(out) / "verdict.json").read_text())
    assert verdict["verdict"] == "FAILED"
    assert "interrupted by signal 15 at cell" in " ".join(verdict["reasons"])
    tracks = platform.tracks()
    assert tracks[(SERVICE, "canary")]["running"] is False
    assert tracks[(SERVICE, "canary")]["weight"] == 0
    assert tracks[(SERVICE, "stable")]["weight"] == 100


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_stray_canary_is_named_by_up_and_removed_by_abort(platform: Platform) -> None:
    proc = platform.run_drill("pause_scale=1")
    try:
        _wait("the canary to run", lambda: _canary_runs(platform), 300, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: nothing can run an abort path
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(2)  # the orphaned kernel notices its parent is gone and exits
    stray = platform.tracks()[(SERVICE, "canary")]
    assert stray["running"], stray  # nothing ran an abort path: the canary is left behind
    status = platform.clinops("status")
    assert re.search(rf"{SERVICE}\s+canary\s+\S+\s+yes\s+{stray['weight']}%", status.stdout), status.stdout
    up = platform.clinops("up", "--levels", "0,1,4,6")
    said = up.stdout + up.stderr
    assert "stray canary" in said and f"clinops abort {SERVICE}" in said, said
    aborted = platform.clinops("abort", SERVICE)
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    after = platform.tracks()
    assert after[(SERVICE, "canary")]["running"] is False and after[(SERVICE, "canary")]["weight"] == 0
    assert after[(SERVICE, "stable")]["running"] is True and after[(SERVICE, "stable")]["weight"] == 100
    again = platform.clinops("up", "--levels", "0,1,4,6")
    assert "stray canary" not in again.stdout + again.stderr
