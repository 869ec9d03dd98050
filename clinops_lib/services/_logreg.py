"""The one model shape both of the platform's risk models have: a logistic regression over
standardised, named features, stored as a JSON artifact.

:class:`~.training.RiskModel` (a request carries every feature) and
:class:`~.subject_risk.SubjectRiskModel` (features looked up in the online store) differ only
in their artifact format string, in which features they accept and in what a missing value
means; scoring, the artifact's common fields and their checks (a JSON object, the right
format, no field missing, one mean/scale/coefficient per feature, positive scales) live here
once, so a check added for one model protects the other. JSON, never pickle: a model file
must not be able to run code in serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..exceptions import ServiceError
from .synthetic import sigmoid

__all__ = ["StandardisedLogit"]


@dataclass(frozen=True)
class StandardisedLogit:
    """Logistic regression over ``features`` standardised by ``mean``/``scale``."""

    #: The artifact's ``format`` field; a reader refuses any other.
    FORMAT: ClassVar[str] = ""
    #: How errors name the artifact ("model artifact", "subject model artifact").
    LABEL: ClassVar[str] = "model artifact"

    version: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float = 0.5

    def probability(self, values: Mapping[str, float]) -> float:
        """Probability of the positive class for one subject's feature values (pure Python)."""
        z = self.intercept
        for name, m, s, c in zip(self.features, self.mean, self.scale, self.coef, strict=True):
            z += c * (float(values[name]) - m) / s
        return sigmoid(z)

    def to_artifact(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "version": self.version,
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
        }

    @classmethod
    def _fields_from_artifact(cls, doc: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """The common fields of a checked artifact document (plus the names in ``extra``, unchecked);
        :class:`ServiceError` names what is wrong."""
        label = cls.LABEL
        if not isinstance(doc, dict):
            raise ServiceError(f"{label}: expected a JSON object")
        if doc.get("format") != cls.FORMAT:
            raise ServiceError(f"{label}: format {doc.get('format')!r}, expected {cls.FORMAT!r}")
        need = ("version", *extra, "features", "mean", "scale", "coef", "intercept")
        if missing := [k for k in need if k not in doc]:
            raise ServiceError(f"{label}: missing field(s) {', '.join(missing)}")
        features = tuple(str(f) for f in doc["features"])
        if not features:
            raise ServiceError(f"{label}: no features")
        for name in ("mean", "scale", "coef"):
            if len(doc[name]) != len(features):
                raise ServiceError(
                    f"{label}: {name} has {len(doc[name])} values for {len(features)} features"
                )
        if any(float(s) <= 0 for s in doc["scale"]):
            raise ServiceError(f"{label}: scale must be positive")
        return {
            "version": str(doc["version"]),
            "features": features,
            "mean": tuple(float(v) for v in doc["mean"]),
            "scale": tuple(float(v) for v in doc["scale"]),
            "coef": tuple(float(v) for v in doc["coef"]),
            "intercept": float(doc["intercept"]),
            "threshold": float(doc.get("threshold", 0.5)),
            **{k: doc[k] for k in extra},
        }
