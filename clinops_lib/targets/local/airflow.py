"""Airflow's REST API (v2), as the local target and the deployment runbook use it: trigger one run
of the pipeline DAG, wait for it with a timeout, and read each task's state and duration.

The local API server runs with Airflow's simple auth manager in "all admins" mode on loopback
(no credentials exist, so none can leak into a notebook). Timestamps come back as ISO strings;
they are turned into epoch seconds for the deployment timeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from ...exceptions import ComponentError, WaitTimeout

__all__ = ["DAG_TASKS", "DagRun", "TaskRun", "trigger_and_wait"]

TERMINAL = frozenset({"success", "failed"})
#: The pipeline DAG's tasks in run order (``clinops_lib/pipeline/dags/clinops_pipeline.py``).
DAG_TASKS = ("spark_features", "data_quality", "feast_materialize", "train", "register")


@dataclass
class TaskRun:
    task_id: str
    state: str
    started_at: float | None
    ended_at: float | None
    duration: float | None


@dataclass
class DagRun:
    dag_id: str
    run_id: str
    state: str
    started_at: float | None
    ended_at: float | None
    tasks: list[TaskRun] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        return self.ended_at - self.started_at if self.started_at and self.ended_at else None


def _epoch(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _get(client: httpx.Client, path: str) -> dict[str, Any]:
    try:
        r = client.get(path)
    except httpx.HTTPError as e:
        raise ComponentError("airflow", f"API unreachable at {client.base_url}{path}: {e}", "") from e
    if r.status_code != 200:
        raise ComponentError("airflow", f"GET {path}: HTTP {r.status_code} {r.text[:200]}", "")
    return dict(r.json())


def read_run(client: httpx.Client, dag_id: str, run_id: str) -> DagRun:
    run = _get(client, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    tis = _get(client, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").get("task_instances", [])
    tasks = [
        TaskRun(
            t["task_id"],
            t.get("state") or "none",
            _epoch(t.get("start_date")),
            _epoch(t.get("end_date")),
            t.get("duration"),
        )
        for t in tis
    ]
    order = {t: i for i, t in enumerate(DAG_TASKS)}
    tasks.sort(key=lambda t: (order.get(t.task_id, 99), t.task_id))
    return DagRun(
        dag_id,
        run_id,
        run.get("state") or "none",
        _epoch(run.get("start_date")),
        _epoch(run.get("end_date")),
        tasks,
    )


def trigger_and_wait(
    base_url: str,
    dag_id: str,
    run_id: str,
    *,
    timeout: float,
    progress: Callable[[DagRun], None] | None = None,
    interval: float = 3.0,
    transport: httpx.BaseTransport | None = None,
) -> DagRun:
    """Trigger ``run_id`` of ``dag_id`` and poll until it succeeds or fails; WaitTimeout after ``timeout``."""
    with httpx.Client(base_url=base_url, timeout=30.0, transport=transport) as client:
        try:
            r = client.post(
                f"/api/v2/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None}
            )
        except httpx.HTTPError as e:
            raise ComponentError("airflow", f"cannot trigger {dag_id}: {e}", "") from e
        if r.status_code not in (200, 201):
            raise ComponentError("airflow", f"trigger {dag_id}: HTTP {r.status_code} {r.text[:200]}", "")
        t0 = time.monotonic()
        last = ""
        problem = ""
        while True:
            try:
                run = read_run(client, dag_id, run_id)
            except ComponentError as e:  # a busy API server (one worker, 2 shared cores): not yet
                problem = str(e)
                if time.monotonic() - t0 > timeout:
                    raise WaitTimeout(f"timed out after {timeout:g}s waiting for DAG run {dag_id}/{run_id} "
                                      f"(last error: {problem})") from e
                time.sleep(interval)
                continue
            seen = ",".join(f"{t.task_id}={t.state}" for t in run.tasks)
            if progress is not None and seen != last:
                progress(run)
                last = seen
            if run.state in TERMINAL:
                return run
            if time.monotonic() - t0 > timeout:
                raise WaitTimeout(
                    f"timed out after {timeout:g}s waiting for DAG run {dag_id}/{run_id} "
                    f"(state {run.state}; tasks {seen})"
                )
            time.sleep(interval)
