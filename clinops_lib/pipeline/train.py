"""The Level 4 training job of the pipeline: features through Feast, a run in MLflow, a registered version.

``python -m clinops_lib.pipeline.train fit`` (in ``.venv-pipeline``):

1. the entity rows (every subject with its latest observation time and its label) come from
   the offline table the Spark job wrote; the *features* are fetched through Feast's
   point-in-time historical retrieval, the same definitions the online store serves;
2. a logistic regression (the Newton/IRLS of :func:`clinops_lib.services.training.fit_logistic`)
   is fitted on a seeded 75/25 split; holdout AUC and accuracy are computed when the holdout
   has both classes (reported as such, not invented when it has not);
3. parameters, metrics, the Feast data version (the S3 object's version id) and the JSON
   artifact are logged to the MLflow tracking server; the run id is the last line printed.

``python -m clinops_lib.pipeline.train register --run-id R`` registers the run's model as a
new version of the registered model, tags it with the artifact's sha256 and points the alias
(``champion``) at it: model-serving resolves name + alias, never an S3 key.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import PipelineConfig
from .features import ENTITY, FEATURE_VIEW, LABEL, OBJECT_KEY, SUBJECT_FEATURES, TIMESTAMP, feature_refs

__all__ = ["ARTIFACT_DIR", "ARTIFACT_FILE", "EXPERIMENT", "fit", "main", "register"]

EXPERIMENT = "clinops-subject-risk"
ARTIFACT_DIR = "model"
ARTIFACT_FILE = "model.json"
SEED = 20261201


def _mlflow(cfg: PipelineConfig) -> Any:
    import mlflow

    if not cfg.mlflow_url:
        raise ValueError("CLINOPS_MLFLOW_URL is not set (the MLflow tracking server)")
    mlflow.set_tracking_uri(cfg.mlflow_url)
    return mlflow


def training_frame(cfg: PipelineConfig) -> tuple[Any, str]:
    """(features + label per subject through Feast, the offline table's S3 version id)."""
    import boto3
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from .feature_store import feature_store

    fs = pafs.S3FileSystem(
        endpoint_override=cfg.s3_endpoint or None,
        region="us-east-1",
        scheme="http" if cfg.s3_endpoint.startswith("http://") else "https",
    )
    entities = pq.read_table(
        f"{cfg.feature_bucket}/{OBJECT_KEY}", filesystem=fs, columns=[ENTITY, TIMESTAMP, LABEL]
    ).to_pandas()
    head = boto3.client("s3", endpoint_url=cfg.s3_endpoint or None).head_object(
        Bucket=cfg.feature_bucket, Key=OBJECT_KEY
    )
    store = feature_store(cfg)
    frame = store.get_historical_features(entity_df=entities, features=feature_refs()).to_df()
    return frame, str(head.get("VersionId", ""))


def fit(cfg: PipelineConfig, *, version: str, l2: float = 1e-2, holdout: float = 0.25) -> dict[str, Any]:
    """Train on the Feast features, log everything to MLflow; returns the summary (with run_id)."""
    import numpy as np

    from ..services.subject_risk import SubjectRiskModel
    from ..services.training import fit_logistic, roc_auc

    t0 = time.monotonic()
    frame, data_version = training_frame(cfg)
    frame = frame.dropna(subset=list(SUBJECT_FEATURES))
    if len(frame) < 20:
        raise ValueError(f"only {len(frame)} subjects with complete features; need at least 20 to train")
    x = frame[list(SUBJECT_FEATURES)].to_numpy(dtype=float)
    y = (frame[LABEL].to_numpy() > 0).astype(float)
    order = np.random.default_rng(SEED).permutation(len(frame))
    n_test = max(1, int(len(frame) * holdout))
    test, train_rows = order[:n_test], order[n_test:]
    mean = x[train_rows].mean(axis=0)
    scale = x[train_rows].std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature (e.g. one visit each) carries no signal, keep it finite
    coef, intercept = fit_logistic((x[train_rows] - mean) / scale, y[train_rows], l2=l2)
    p_test = 1 / (1 + np.exp(-(((x[test] - mean) / scale) @ coef + intercept)))
    metrics: dict[str, float] = {
        "subjects": float(len(frame)),
        "positive_rate": float(y.mean()),
        "holdout_accuracy": float(((p_test >= 0.5) == (y[test] == 1)).mean()),
    }
    if 0 < y[test].sum() < len(test):
        metrics["holdout_auc"] = roc_auc(y[test], p_test)
    model = SubjectRiskModel(
        version=version,
        feature_view=FEATURE_VIEW,
        features=SUBJECT_FEATURES,
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        coef=tuple(coef.tolist()),
        intercept=intercept,
    )
    body = json.dumps(model.to_artifact(), sort_keys=True, indent=1).encode()
    digest = hashlib.sha256(body).hexdigest()
    mlflow = _mlflow(cfg)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"subject-risk-{version}") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(
            {
                "model_version": version,
                "l2": l2,
                "holdout": holdout,
                "seed": SEED,
                "feature_view": FEATURE_VIEW,
                "features": ",".join(SUBJECT_FEATURES),
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "clinops.data_version": data_version,
                "clinops.artifact_sha256": digest,
                "clinops.dag_run": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID", ""),
            }
        )
        path = Path(tmp) / ARTIFACT_FILE
        path.write_bytes(body)
        mlflow.log_artifact(str(path), artifact_path=ARTIFACT_DIR)
        run_id = run.info.run_id
    return {
        "event": "train.logged",
        "run_id": run_id,
        "model_version": version,
        "metrics": metrics,
        "data_version": data_version,
        "artifact_sha256": digest,
        "seconds": round(time.monotonic() - t0, 2),
    }


def register(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """New registered version from ``run_id``'s artifact; the alias moves to it once READY."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _mlflow(cfg)
    client = MlflowClient()
    run = client.get_run(run_id)
    try:
        client.create_registered_model(cfg.model_name, description="Adverse-event risk per trial subject")
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    digest = run.data.tags.get("clinops.artifact_sha256", "")
    mv = client.create_model_version(
        cfg.model_name,
        source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}",
        run_id=run_id,
        tags={
            "artifact_sha256": digest,
            "artifact_file": ARTIFACT_FILE,
            "data_version": run.data.tags.get("clinops.data_version", ""),
        },
    )
    deadline = time.monotonic() + 60
    while mv.status != "READY":
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RuntimeError(f"model version {mv.version} of {cfg.model_name} is {mv.status}")
        time.sleep(0.5)
        mv = client.get_model_version(cfg.model_name, mv.version)
    client.set_registered_model_alias(cfg.model_name, cfg.model_alias, mv.version)
    return {
        "event": "train.registered",
        "name": cfg.model_name,
        "version": mv.version,
        "alias": cfg.model_alias,
        "run_id": run_id,
        "source": mv.source,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clinops_lib.pipeline.train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_fit = sub.add_parser("fit")
    p_fit.add_argument("--version", required=True, help="model version recorded in the artifact")
    p_reg = sub.add_parser("register")
    p_reg.add_argument("--run-id", required=True, help="the MLflow run whose model to register")
    args = parser.parse_args(argv)
    cfg = PipelineConfig.from_env()
    try:
        summary = fit(cfg, version=args.version) if args.command == "fit" else register(cfg, args.run_id)
    except Exception as e:  # noqa: BLE001 - the job's exit status and last line say what failed
        print(json.dumps({"event": "train.failed", "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    if args.command == "fit":
        print(summary["run_id"], flush=True)  # last line: Airflow's XCom for the register task
    return 0


if __name__ == "__main__":
    sys.exit(main())
