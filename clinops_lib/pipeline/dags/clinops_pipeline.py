"""The platform's pipeline DAG (Level 5): Spark features -> data quality -> Feast materialize -> train
-> register.

Each task runs one job of :mod:`clinops_lib.pipeline` in the pipeline's own virtual environment
(``$CLINOPS_PIPELINE_PYTHON``, set by the local target with the rest of the job environment),
so Airflow's environment holds Airflow only. A job's last output line is its summary; the
training task's last line is the MLflow run id, handed to the register task through XCom.
The ``data_quality`` task is the gate: the repository's great-expectations suites on the Spark
job's output (:mod:`clinops_lib.pipeline.quality`); when an expectation fails the task fails and
Airflow leaves materialize, train and register ``upstream_failed``, so the run fails before training.
Unscheduled: the deployment runbook (or an operator) triggers a run.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

PYTHON = os.environ.get("CLINOPS_PIPELINE_PYTHON", "python")
ROOT = os.environ.get("CLINOPS_PROJECT_ROOT", ".")


def _job(task_id: str, args: str, minutes: int) -> BashOperator:
    return BashOperator(
        task_id=task_id,
        bash_command=f'"{PYTHON}" -m clinops_lib.pipeline.{args}',
        cwd=ROOT,
        execution_timeout=timedelta(minutes=minutes),
    )


with DAG(
    dag_id="clinops_pipeline",
    description="Observations -> Spark features (S3 Parquet) -> data-quality gate -> Feast online store "
    "-> MLflow model version",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    tags=["clinops", "issue-14"],
) as dag:
    spark = _job("spark_features", "spark_job", 10)
    quality = _job("data_quality", "quality validate --run-id '{{ run_id }}'", 10)
    materialize = _job("feast_materialize", "feature_store materialize", 10)
    train = _job("train", "train fit --version '{{ run_id }}'", 10)
    register = _job("register", "train register --run-id {{ ti.xcom_pull(task_ids='train') }}", 5)
    spark >> quality >> materialize >> train >> register
