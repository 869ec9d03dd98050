"""Benchmark: false alarms of the canary judge on A/A drills (canary identical to stable).

``--drills`` (default 100) short A/A canary drills on the REAL local target, split across the
two services and run two at a time (one per service, each with its own traffic): the canary
runs the same code as stable under a different version label (``<stable>-aaN``), steps
``setWeight 50 -> pause 2s -> setWeight 100`` with a 1 s analysis interval, 200 req/s each.
Every drill must be PROMOTED; an ABORTED drill is a false alarm (target: at most 1 in 100),
a PAUSED one is reported separately (inconclusive, not an alarm).

Writes ``benchmarks/results/false_alarms.json``. The machine is shared: other engineers' work
ran at the same time, which adds latency noise to both tracks alike.

    .venv/bin/python benchmarks/false_alarms.py [--drills 100] [--port-base 25000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detection import platform_down, platform_up  # noqa: E402

from clinops_lib.drills import CanaryConfig, run_canary  # noqa: E402
from clinops_lib.targets.base import Target  # noqa: E402

STEPS = [{"setWeight": 50}, {"pause": {"duration": "2s"}}, {"setWeight": 100}]
THRESHOLDS = {"interval": "1s", "min_interval_s": 1.0}


def drills(target: Target, service: str, n: int, out: list[dict[str, Any]], lock: threading.Lock) -> None:
    for i in range(n):
        stable = target.tracks(service)["stable"].version.split("-aa")[0]
        version = f"{stable}-aa{i}"
        t0 = time.time()
        try:
            cfg = CanaryConfig(service=service, canary_version=version, rate=200, steps=STEPS,
                               pause_scale=1.0, thresholds=THRESHOLDS, tail_s=0.2, abort_delay_s=0.5)
            res = run_canary(target, cfg)
            row = {"service": service, "drill": i, "outcome": res.outcome, "reason": res.reason,
                   "intervals": len(res.intervals), "max_e_value": res.error_test["max_e_value"],
                   "seconds": time.time() - t0}
        except Exception as e:  # noqa: BLE001 - a drill that could not run is recorded, not hidden
            row = {"service": service, "drill": i, "outcome": "ERROR", "reason": f"{type(e).__name__}: {e}",
                   "seconds": time.time() - t0}
        with lock:
            out.append(row)
            print(json.dumps(row), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drills", type=int, default=100)
    ap.add_argument("--port-base", type=int, default=25000)
    args = ap.parse_args()
    target, state = platform_up(args.port_base)
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()
    started = time.time()
    try:
        half = args.drills // 2
        plan = [("clinical-gateway", args.drills - half), ("model-serving", half)]
        threads = [threading.Thread(target=drills, args=(target, svc, n, rows, lock)) for svc, n in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        platform_down(target, state)
    counts = Counter(r["outcome"] for r in rows)
    result = {
        "benchmark": "false_alarms", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {"target": "local", "rate_per_service": 200, "steps": STEPS, "thresholds": THRESHOLDS,
                  "alpha": 0.05, "drills": args.drills, "parallel": "one drill per service at a time"},
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0],
                    "note": "shared machine: other engineers' tests ran at the same time"},
        "wall_seconds": time.time() - started,
        "outcomes": dict(counts), "false_alarms": counts.get("ABORTED", 0),
        "target": {"max_false_alarms": 1},
        "passed": counts.get("ABORTED", 0) <= 1 and counts.get("ERROR", 0) == 0,
        "alarms": [r for r in rows if r["outcome"] != "PROMOTED"],
        "runs": rows,
    }
    out = ROOT / "benchmarks" / "results" / "false_alarms.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
