"""What ``wal_level=logical`` (Debezium's prerequisite) costs the local PostgreSQL's writes.

The local target now starts PostgreSQL with ``wal_level=logical`` (was the default ``replica``).
This starts one PostgreSQL exactly as the local target does (its component: same flags, trust
auth on loopback), creates the gateway's ``clinical_observations`` table with the gateway's own
DDL, and times ``--rows`` single-row autocommitted inserts (one per request, as the gateway
writes them) under each WAL level, alternating the levels over ``--rounds`` rounds (A B B A ...)
so a change in the machine's load hits both alike. Reported per level: inserts per second
(median over rounds, and the median of the per-round paired ratios), WAL bytes per insert
(``pg_current_wal_lsn`` difference) and the inserting backend's CPU microseconds per insert
(``/proc/<pid>/stat``), the last two hardly load-dependent. No replication slot is active here,
so this is the cost of the WAL level alone; decoding for an active Debezium connector happens in
a walsender after commit, off the inserting session's path. Writes ``benchmarks/results/wal_level.json``.

    .venv/bin/python benchmarks/wal_level.py --port-base 6200 [--rows 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clinops_lib.config import PortMap, Settings  # noqa: E402
from clinops_lib.services.gateway import OBSERVATIONS_SCHEMA  # noqa: E402
from clinops_lib.targets.local import supervisor as sup  # noqa: E402
from clinops_lib.targets.local.components import PostgreSQL  # noqa: E402

LEVELS = ("replica", "logical")
VITALS = '{"hr": 70, "sbp": 120, "dbp": 80}'


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process (clock ticks): the inserting backend's own CPU, hardly load-dependent."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def run_level(pg: PostgreSQL, level: str, rows: int) -> dict[str, float]:
    spec = pg.spec()
    argv = [a if not a.startswith("wal_level=") else f"wal_level={level}" for a in spec.argv]
    spec = replace(spec, argv=argv)
    proc = sup.start(spec)
    try:
        sup.wait_healthy(proc, pg.healthy, 60, "SELECT 1")
        pg.after_start()
        with pg._connect("clinops") as conn:
            assert conn.execute("SHOW wal_level").fetchone() == (level,)
            conn.execute(OBSERVATIONS_SCHEMA)
            lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            cpu0 = _cpu_ticks(backend)
            t0 = time.perf_counter()
            for i in range(rows):
                conn.execute(
                    "INSERT INTO clinical_observations (study_id, site_id, subject_id, visit, observed_at, "
                    "adverse_event, vitals, gateway_version) VALUES (%s, %s, %s, %s, now(), false, %s, %s)",
                    ("STUDY-WAL", "SITE-WAL", f"S{i % 97}", i % 12, VITALS, "bench"),
                )
            seconds = time.perf_counter() - t0
            cpu = (_cpu_ticks(backend) - cpu0) / os.sysconf("SC_CLK_TCK")
            wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,)).fetchone()[0]  # type: ignore[index]
        return {"inserts_per_s": rows / seconds, "wal_bytes_per_insert": float(wal) / rows,
                "backend_cpu_us_per_insert": cpu / rows * 1e6}
    finally:
        sup.stop(proc, stop_signal=spec.stop_signal, signal_group=spec.signal_group)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/wal_level.json"))
    args = parser.parse_args()
    if not 100 <= args.rows <= 100_000 or not 1 <= args.rounds <= 20:
        parser.error("--rows must be 100..100000 and --rounds 1..20")
    work = Path(tempfile.mkdtemp(prefix="clinops-wal-", dir="/tmp"))
    work.chmod(0o755)  # postgres runs as an unprivileged user when we are root
    (work / "state").mkdir(mode=0o755)
    pg = PostgreSQL(Settings(state_dir=work / "state", ports=PortMap(args.port_base)))
    results: dict[str, list[dict[str, float]]] = {lv: [] for lv in LEVELS}
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        pg.prepare()
        for r in range(args.rounds):
            order = LEVELS if r % 2 == 0 else tuple(reversed(LEVELS))
            for level in order:
                results[level].append(run_level(pg, level, args.rows))
                print(f"round {r + 1} {level}: {results[level][-1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    def median(runs: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(x[key] for x in runs), 1)

    summary = {
        lv: {"inserts_per_s_median": median(runs, "inserts_per_s"),
             "wal_bytes_per_insert_median": median(runs, "wal_bytes_per_insert"),
             "backend_cpu_us_per_insert_median": median(runs, "backend_cpu_us_per_insert"),
             "runs": [{k: round(v, 1) for k, v in x.items()} for x in runs]}
        for lv, runs in results.items()
    }
    doc = {
        "benchmark": "single-row autocommitted inserts into clinical_observations, "
                     "wal_level replica vs logical",
        "command": f".venv/bin/python benchmarks/wal_level.py --port-base {args.port_base} "
                   f"--rows {args.rows} --rounds {args.rounds}",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "levels": summary,
        "logical_vs_replica": {
            "throughput_ratio": round(summary["logical"]["inserts_per_s_median"]
                                      / summary["replica"]["inserts_per_s_median"], 3),
            "wal_bytes_ratio": round(summary["logical"]["wal_bytes_per_insert_median"]
                                     / summary["replica"]["wal_bytes_per_insert_median"], 3),
            "backend_cpu_ratio": round(summary["logical"]["backend_cpu_us_per_insert_median"]
                                       / summary["replica"]["backend_cpu_us_per_insert_median"], 3),
            # paired by round (both levels ran back to back): the median of the per-round ratios
            "throughput_ratio_paired_median": round(statistics.median(
                a["inserts_per_s"] / b["inserts_per_s"]
                for a, b in zip(results["logical"], results["replica"], strict=True)), 3),
        },
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["logical_vs_replica"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
