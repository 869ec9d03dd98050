"""The subject-risk model artifact: what the pipeline's training job registers in MLflow and
model-serving loads by registry name and alias.

Unlike :class:`~.training.RiskModel` (a request carries every feature), this model scores a
*subject*: its features are looked up in the Feast online store, so the artifact names the
feature view and the features it was trained on, and serving asks the feature server for
exactly those. JSON, never pickle: a model file must not be able to run code in serving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..exceptions import ServiceError

__all__ = ["SUBJECT_ARTIFACT_FORMAT", "SubjectRiskModel"]

SUBJECT_ARTIFACT_FORMAT = "clinops-subject-logreg/1"


@dataclass(frozen=True)
class SubjectRiskModel:
    """Standardised logistic regression over named online features of one feature view."""

    version: str
    feature_view: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float = 0.5

    def score(self, values: Mapping[str, float | None]) -> float:
        """Probability of an adverse event; :class:`ServiceError` names a missing feature."""
        missing = [n for n in self.features if values.get(n) is None]
        if missing:
            raise ServiceError(f"no online value for feature(s) {', '.join(missing)}")
        z = self.intercept
        for name, m, s, c in zip(self.features, self.mean, self.scale, self.coef, strict=True):
            z += c * (float(values[name]) - m) / s  # type: ignore[arg-type]
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def feature_refs(self) -> list[str]:
        return [f"{self.feature_view}:{n}" for n in self.features]

    def to_artifact(self) -> dict[str, Any]:
        return {
            "format": SUBJECT_ARTIFACT_FORMAT,
            "version": self.version,
            "feature_view": self.feature_view,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
        }

    @classmethod
    def from_artifact(cls, doc: Any) -> SubjectRiskModel:
        """Validate an artifact document; :class:`ServiceError` names what is wrong."""
        if not isinstance(doc, dict):
            raise ServiceError("subject model artifact: expected a JSON object")
        if doc.get("format") != SUBJECT_ARTIFACT_FORMAT:
            raise ServiceError(
                f"subject model artifact: format {doc.get('format')!r}, expected {SUBJECT_ARTIFACT_FORMAT!r}"
            )
        need = ("version", "feature_view", "features", "mean", "scale", "coef", "intercept")
        if missing := [k for k in need if k not in doc]:
            raise ServiceError(f"subject model artifact: missing field(s) {', '.join(missing)}")
        features = tuple(str(f) for f in doc["features"])
        if not features:
            raise ServiceError("subject model artifact: no features")
        for name in ("mean", "scale", "coef"):
            if len(doc[name]) != len(features):
                raise ServiceError(
                    f"subject model artifact: {name} has {len(doc[name])} values for {len(features)} features"
                )
        if any(float(s) <= 0 for s in doc["scale"]):
            raise ServiceError("subject model artifact: scale must be positive")
        return cls(
            version=str(doc["version"]),
            feature_view=str(doc["feature_view"]),
            features=features,
            mean=tuple(float(v) for v in doc["mean"]),
            scale=tuple(float(v) for v in doc["scale"]),
            coef=tuple(float(v) for v in doc["coef"]),
            intercept=float(doc["intercept"]),
            threshold=float(doc.get("threshold", 0.5)),
        )
