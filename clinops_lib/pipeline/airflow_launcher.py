"""Airflow on the local target: ``airflow standalone`` without its log servers, as one process tree.

``python -m clinops_lib.pipeline.airflow_launcher`` (with ``.venv-airflow``'s Python, stdlib only)
migrates the metadata database, then runs the API server, the scheduler and the DAG processor
as its children. Why not ``airflow standalone``: it also starts the workers' log servers, which
bind every interface (``[::]:8793``/``8794``, fixed ports) — the local target promises loopback
only, and two platforms on one machine would fight over those ports. The API server reads the
task logs from the shared log folder directly, so the log servers are not needed here
(``--skip-serve-logs``); no deferrable task exists, so no triggerer either.

If any child exits, the others are stopped and the launcher exits with that child's status, so
the supervisor sees one failure (named in the log) instead of a half-running Airflow. SIGTERM
stops all children (the local target also signals the whole process group).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

PROCESSES: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
}


def main() -> int:
    airflow = shutil.which("airflow")
    if airflow is None:
        print("airflow_launcher: 'airflow' not on PATH", flush=True)
        return 2
    # `db migrate` imports all of Airflow (tens of seconds on a loaded machine) even when there is
    # nothing to do: a stamp per Airflow version in AIRFLOW_HOME (the state dir, removed with the
    # database by `down --purge`) lets a warm start skip it.
    from importlib.metadata import version

    stamp = Path(os.environ.get("AIRFLOW_HOME", ".")) / f".migrated-{version('apache-airflow')}"
    if not stamp.exists():
        rc = subprocess.run([airflow, "db", "migrate"], check=False).returncode
        if rc != 0:
            print(f"airflow_launcher: `airflow db migrate` exited with status {rc}", flush=True)
            return rc
        stamp.write_text("migrated\n")
    children = {name: subprocess.Popen([airflow, *args]) for name, args in PROCESSES.items()}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while not stopping:
        exited = {n: p.returncode for n, p in children.items() if p.poll() is not None}
        if exited:
            name, status = next(iter(exited.items()))
            print(f"airflow_launcher: {name} exited with status {status}; stopping the others", flush=True)
            status = status or 1
            break
        time.sleep(0.5)
    for p in children.values():
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 20
    for p in children.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
