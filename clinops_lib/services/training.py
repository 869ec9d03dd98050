"""The training job (Level 4): fit the adverse-event risk model and publish it to S3.

``python -m clinops_lib.services.training --bucket B --key K --version V`` trains a
logistic regression (numpy, Newton/IRLS with a little L2) on synthetic trial data drawn
with a fixed seed, evaluates it on a holdout split (AUC, accuracy), refuses to publish a
model below ``--min-auc``, then uploads two objects:

* ``K`` — the artifact: JSON (never pickle: a model file must not be able to run code in
  the serving process) with feature names, standardisation, coefficients, version;
* ``K.metadata.json`` — version, sha256 of the training data and of the artifact, metrics,
  seed, sizes. Written *after* the artifact, so a reader that finds metadata finds a
  complete artifact; model-serving refuses an artifact whose hash differs from it.

Same seed, same data hash, same coefficients: a retrained model is reproducible, which is
what an auditor asks of a GxP model release.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..exceptions import ClinopsError, ServiceError
from ._logreg import StandardisedLogit
from .synthetic import FEATURES, training_data

__all__ = [
    "ARTIFACT_FORMAT",
    "DEFAULT_SAMPLES",
    "DEFAULT_SEED",
    "RiskModel",
    "fit_logistic",
    "main",
    "metadata_key",
    "roc_auc",
    "train",
    "train_and_upload",
]

ARTIFACT_FORMAT = "clinops-logreg/1"
DEFAULT_SEED = 20240917
DEFAULT_SAMPLES = 6000


def metadata_key(key: str) -> str:
    """Where the metadata of the artifact at ``key`` lives."""
    return f"{key}.metadata.json"


@dataclass(frozen=True)
class RiskModel(StandardisedLogit):
    """A trained model as serving uses it: pure Python scoring, no numpy on the hot path.

    Scoring and the artifact's common checks are :class:`~._logreg.StandardisedLogit`'s; this
    model accepts exactly the serving schema's :data:`~.synthetic.FEATURES`.
    """

    FORMAT = ARTIFACT_FORMAT
    LABEL = "model artifact"

    def score(self, values: Mapping[str, float]) -> float:
        """Probability of an adverse event for one subject's feature values."""
        return self.probability(values)

    @classmethod
    def from_artifact(cls, doc: Any) -> RiskModel:
        """Validate an artifact document; :class:`ServiceError` names what is wrong."""
        fields = cls._fields_from_artifact(doc)
        if fields["features"] != FEATURES:
            raise ServiceError(
                f"model artifact: features {list(fields['features'])} differ from the serving schema "
                f"{list(FEATURES)}"
            )
        return cls(**fields)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, iterations: int = 25, tol: float = 1e-10
) -> tuple[np.ndarray, float]:
    """Newton/IRLS on already standardised ``x``; returns (coefficients, intercept).

    Why Newton: 10 features, a few thousand rows — it converges in under 10 steps to the
    exact optimum, so the result does not depend on a learning-rate choice.
    """
    n, d = x.shape
    a = np.column_stack([np.ones(n), x])
    w = np.zeros(d + 1)
    penalty = np.eye(d + 1) * l2 * n
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + penalty @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < tol:
            break
    return w[1:], float(w[0])


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties averaged."""
    from scipy.stats import rankdata

    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ServiceError("AUC is undefined: the evaluation set has only one class")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train(
    version: str, *, seed: int = DEFAULT_SEED, samples: int = DEFAULT_SAMPLES, holdout: float = 0.25
) -> tuple[RiskModel, dict[str, Any]]:
    """Train and evaluate; returns the model and its metadata (without the artifact hash yet)."""
    x, y = training_data(seed, samples)
    data_hash = hashlib.sha256(
        np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()
    ).hexdigest()
    order = np.random.default_rng(seed + 1).permutation(samples)
    n_test = int(samples * holdout)
    test, fit = order[:n_test], order[n_test:]
    mean, scale = x[fit].mean(axis=0), x[fit].std(axis=0)
    coef, intercept = fit_logistic((x[fit] - mean) / scale, y[fit])
    p_test = 1 / (1 + np.exp(-(((x[test] - mean) / scale) @ coef + intercept)))
    model = RiskModel(
        version=version,
        features=FEATURES,
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        coef=tuple(coef.tolist()),
        intercept=intercept,
    )
    metadata: dict[str, Any] = {
        "version": version,
        "model_format": ARTIFACT_FORMAT,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "data_sha256": data_hash,
        "samples": {
            "train": int(fit.size),
            "test": int(test.size),
            "positive_rate": round(float(y.mean()), 4),
        },
        "metrics": {
            "auc": round(roc_auc(y[test], p_test), 4),
            "accuracy": round(float(((p_test >= model.threshold) == (y[test] == 1)).mean()), 4),
        },
        "features": list(FEATURES),
    }
    return model, metadata


def train_and_upload(
    s3_client: Any,
    bucket: str,
    key: str,
    version: str,
    *,
    seed: int = DEFAULT_SEED,
    samples: int = DEFAULT_SAMPLES,
    min_auc: float = 0.7,
    create_bucket: bool = False,
) -> dict[str, Any]:
    """Train, gate on ``min_auc``, upload artifact then metadata; returns the metadata.

    Raises :class:`ServiceError` (nothing uploaded) when the model is below the gate, and
    :class:`ServiceError` wrapping the SDK error when S3 refuses.
    """
    if not bucket or not key:
        raise ServiceError(f"bucket={bucket!r} and key={key!r} must both be non-empty")
    if not version:
        raise ServiceError("version must be non-empty")
    model, metadata = train(version, seed=seed, samples=samples)
    if metadata["metrics"]["auc"] < min_auc:
        raise ServiceError(
            f"model {version}: holdout AUC {metadata['metrics']['auc']} is below the "
            f"release gate {min_auc}; nothing uploaded"
        )
    body = json.dumps(model.to_artifact(), sort_keys=True, indent=1).encode()
    metadata.update(
        {"artifact_key": key, "artifact_sha256": hashlib.sha256(body).hexdigest(), "min_auc": min_auc}
    )
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if create_bucket:
            try:
                s3_client.head_bucket(Bucket=bucket)
            except ClientError:
                s3_client.create_bucket(Bucket=bucket)
        s3_client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            Metadata={"clinops-version": version},
        )
        s3_client.put_object(
            Bucket=bucket,
            Key=metadata_key(key),
            Body=json.dumps(metadata, sort_keys=True, indent=1).encode(),
            ContentType="application/json",
            Metadata={"clinops-version": version},
        )
    except (BotoCoreError, ClientError) as e:
        raise ServiceError(f"upload of model {version} to s3://{bucket}/{key} failed: {e}") from e
    return metadata


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry of the Kubernetes Job / local run: JSON log lines, exit 0/1/2."""
    parser = argparse.ArgumentParser(
        prog="python -m clinops_lib.services.training",
        description="Train the adverse-event risk model and upload it to S3.",
    )
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True, help="artifact key; metadata goes to KEY.metadata.json")
    parser.add_argument("--version", required=True, help="model version recorded in artifact and metadata")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--min-auc", type=float, default=0.7, help="release gate on the holdout AUC")
    parser.add_argument("--create-bucket", action="store_true", help="create the bucket if it does not exist")
    args = parser.parse_args(argv)

    def log(event: str, level: str = "info", **fields: Any) -> None:
        print(
            json.dumps(
                {
                    "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "level": level,
                    "service": "training-job",
                    "version": args.version,
                    "event": event,
                    **fields,
                }
            ),
            flush=True,
        )

    if args.samples < 100:
        log("failed", "error", error=f"--samples {args.samples}: need at least 100")
        return 2
    try:
        from ._common import ServiceConfig, aws_client

        s3 = aws_client("s3", ServiceConfig.from_env("training-job"))
        log("training.started", bucket=args.bucket, key=args.key, seed=args.seed, samples=args.samples)
        meta = train_and_upload(
            s3,
            args.bucket,
            args.key,
            args.version,
            seed=args.seed,
            samples=args.samples,
            min_auc=args.min_auc,
            create_bucket=args.create_bucket,
        )
    except ClinopsError as e:
        log("failed", "error", error=str(e))
        return 1
    log(
        "training.uploaded",
        bucket=args.bucket,
        key=args.key,
        metrics=meta["metrics"],
        data_sha256=meta["data_sha256"],
        artifact_sha256=meta["artifact_sha256"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
