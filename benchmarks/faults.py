"""Benchmark: does every fault during a canary drill end with traffic on stable, sealed evidence and
nothing left behind?

For each fault, on the REAL local target: ``clinops run runbooks/02-canary-drill.ipynb`` (a
subprocess, as an operator runs it) at 200 req/s; once the canary serves traffic the fault is
injected:

* ``canary-killed``        SIGKILL to the canary's process
* ``prometheus-killed``    SIGKILL to Prometheus
* ``postgresql-killed``    SIGKILL to PostgreSQL's postmaster
* ``localstack-killed``    SIGKILL to LocalStack
* ``haproxy-socket-removed``  the HAProxy admin socket unlinked (the traffic layer unreachable)
* ``sigterm-runner``       SIGTERM to ``clinops run``
* ``down-mid-drill``       ``clinops down`` while the drill runs

Measured, with a probe load of 50 req/s of this script's own (its records say which version
served each request): seconds from the fault until the last request served by the canary (all
traffic on stable from then on), probe requests that failed after that moment, whether the run
sealed a bundle that ``clinops evidence verify`` accepts, and after ``clinops down`` the
processes of the platform and listening ports of its block that are left. Between faults the
platform is brought up again (``clinops up`` restarts what was killed).

Writes ``benchmarks/results/faults.json`` with the machine's load average (a shared 2-core
machine: the times are what this machine did, not a bound).

    .venv/bin/python benchmarks/faults.py [--port-base 37000] [--only canary-killed,...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clinops_lib.config import PortMap, Settings  # noqa: E402
from clinops_lib.drills.loadgen import LoadGenerator, LoadSpec, default_payloads  # noqa: E402
from clinops_lib.targets.local.components import HAProxy  # noqa: E402
from clinops_lib.targets.local.target import LocalTarget  # noqa: E402

SERVICE = "clinical-gateway"
PATH = "/v1/observations"
FAULTS = ("canary-killed", "prometheus-killed", "postgresql-killed", "localstack-killed",
          "haproxy-socket-removed", "sigterm-runner", "down-mid-drill")
CLINOPS = [str(ROOT / ".venv" / "bin" / "python"), "-m", "clinops_lib.cli"]


def clinops(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLINOPS, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def leftovers(state_dir: Path, ports: range) -> tuple[list[int], list[int]]:
    """Processes whose environment names our state dir, and listening ports of our block."""
    marker = f"CLINOPS_STATE_DIR={state_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat[stat.rindex(")") + 2] != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A":
                listening.add(int(f[1].rsplit(":", 1)[1], 16))
    return pids, sorted(p for p in ports if p in listening)


def inject(fault: str, target: LocalTarget, run: subprocess.Popen[str], env: dict[str, str]) -> None:
    state = target.state()
    comp = {"prometheus-killed": "prometheus", "postgresql-killed": "postgresql",
            "localstack-killed": "localstack"}
    if fault == "canary-killed":
        canary = state.track(SERVICE, "canary")
        if canary is None:
            raise RuntimeError(f"fault {fault}: {SERVICE} has no canary to kill")
        os.kill(canary.pid, signal.SIGKILL)
    elif fault in comp:
        os.kill(state.components[comp[fault]].pid, signal.SIGKILL)
    elif fault == "haproxy-socket-removed":
        HAProxy(target.settings).admin_path.unlink()
    elif fault == "sigterm-runner":
        run.send_signal(signal.SIGTERM)
    elif fault == "down-mid-drill":
        clinops(env, "down")


def one(fault: str, env: dict[str, str], settings: Settings, ports: range, archive: Path) -> dict[str, Any]:
    target = LocalTarget(settings)
    up = clinops(env, "up", "--levels", "0,1,4,6")
    if up.returncode != 0:
        return {"fault": fault, "error": f"clinops up failed: {up.stderr[-500:]}"}
    probe = LoadGenerator(LoadSpec(url=target.service_url(SERVICE), path=PATH, rate=50, label="probe",
                                   payloads=default_payloads(PATH), seed=7)).start()
    run = subprocess.Popen([*CLINOPS, "run", "runbooks/02-canary-drill.ipynb", "-p", "rate", "200",
                            "-p", "pause_scale", "1", "--out", str(archive), "--no-progress"],
                           env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    canary_version = ""
    deadline = time.time() + 300
    while time.time() < deadline and run.poll() is None:
        try:
            if target.canary_weight(SERVICE) > 0:
                canary_version = target.tracks(SERVICE)["canary"].version
                break
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.1)
    if not canary_version:
        run.kill()
        out, err = run.communicate()
        probe.stop()
        return {"fault": fault, "error": "the canary never received traffic",
                "runner_exit": run.returncode, "runner_output_tail": (out + err)[-800:]}
    time.sleep(2.0)  # the canary serves for a moment before the fault
    t0 = time.time()
    inject(fault, target, run, env)
    try:
        out, err = run.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        run.kill()
        out, err = run.communicate()
    time.sleep(2.0)
    probe.stop()
    records = probe.records()
    canary_after = [r.done for r in records if r.version == canary_version and r.sent >= t0]
    on_stable_at = max(canary_after) if canary_after else t0
    failed_after = sum(1 for r in records if r.sent > on_stable_at and r.failed)
    sent_after = sum(1 for r in records if r.sent > on_stable_at)
    m = re.search(r"^bundle: (.+)$", out, re.M)
    sealed = bool(m) and clinops(env, "evidence", "verify", m.group(1).strip()).returncode == 0
    verdict = {}
    if m:
        verdict = json.loads((Path(m.group(1).strip()) / "verdict.json").read_text())
    down = clinops(env, "down")
    pids, listening = leftovers(settings.state_dir, ports)
    return {
        "fault": fault,
        "runner_exit": run.returncode,
        "seconds_until_all_traffic_on_stable": round(on_stable_at - t0, 2),
        "probe_requests_after_that": sent_after,
        "probe_requests_failed_after_that": failed_after,
        "bundle_sealed_and_verified": sealed,
        "verdict": verdict.get("verdict"),
        "reasons": [r[:300] for r in verdict.get("reasons", [])][:4],
        "down_exit": down.returncode,
        "processes_left_after_down": len(pids),
        "ports_left_after_down": listening,
        "runner_stderr_tail": err[-300:] if run.returncode not in (0, 1, 143) else "",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-base", type=int, default=37000)
    ap.add_argument("--only", default=",".join(FAULTS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faults.json"))
    args = ap.parse_args()
    faults = [f for f in args.only.split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        ap.error(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    work = Path(tempfile.mkdtemp(prefix="clinops-faults-", dir="/tmp"))
    work.chmod(0o755)  # postgres runs as an unprivileged user when we are root
    state = work / "state"
    settings = Settings(state_dir=state, ports=PortMap(args.port_base))
    ports = range(args.port_base, args.port_base + 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINOPS_")}
    env.update(CLINOPS_PORT_BASE=str(args.port_base), CLINOPS_STATE_DIR=str(state))
    load_before = os.getloadavg()
    results = []
    try:
        for fault in faults:
            started = time.time()
            res = one(fault, env, settings, ports, work / "evidence")
            res["wall_s"] = round(time.time() - started, 1)
            print(json.dumps(res), flush=True)
            results.append(res)
    finally:
        clinops(env, "down", "--purge")
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "benchmark": "faults during a canary drill on the local target (200 req/s drill + 50 req/s probe)",
        "command": f".venv/bin/python benchmarks/faults.py --port-base {args.port_base} --only {args.only}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    out = Path(args.out)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
