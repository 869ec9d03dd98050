"""The subject-risk model artifact: what the pipeline's training job registers in MLflow and
model-serving loads by registry name and alias.

Unlike :class:`~.training.RiskModel` (a request carries every feature), this model scores a
*subject*: its features are looked up in the Feast online store, so the artifact names the
feature view and the features it was trained on, and serving asks the feature server for
exactly those. JSON, never pickle: a model file must not be able to run code in serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ..exceptions import ServiceError
from ._logreg import StandardisedLogit

__all__ = ["SUBJECT_ARTIFACT_FORMAT", "SubjectRiskModel"]

SUBJECT_ARTIFACT_FORMAT = "clinops-subject-logreg/1"


@dataclass(frozen=True)
class SubjectRiskModel(StandardisedLogit):
    """Standardised logistic regression over named online features of one feature view.

    Scoring and the artifact's common checks are :class:`~._logreg.StandardisedLogit`'s; this
    model adds the feature view and refuses to score a subject with a feature missing.
    """

    FORMAT = SUBJECT_ARTIFACT_FORMAT
    LABEL = "subject model artifact"

    feature_view: str = field(kw_only=True)

    def score(self, values: Mapping[str, float | None]) -> float:
        """Probability of an adverse event; :class:`ServiceError` names a missing feature."""
        missing = [n for n in self.features if values.get(n) is None]
        if missing:
            raise ServiceError(f"no online value for feature(s) {', '.join(missing)}")
        return self.probability(cast(Mapping[str, float], values))

    def feature_refs(self) -> list[str]:
        return [f"{self.feature_view}:{n}" for n in self.features]

    def to_artifact(self) -> dict[str, Any]:
        return {**super().to_artifact(), "feature_view": self.feature_view}

    @classmethod
    def from_artifact(cls, doc: Any) -> SubjectRiskModel:
        """Validate an artifact document; :class:`ServiceError` names what is wrong."""
        fields = cls._fields_from_artifact(doc, extra=("feature_view",))
        return cls(**{**fields, "feature_view": str(fields["feature_view"])})
