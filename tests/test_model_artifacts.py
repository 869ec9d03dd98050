"""The two risk models' artifacts (services/_logreg.py under training.RiskModel and
subject_risk.SubjectRiskModel): one set of checks refuses a bad artifact of either model,
naming what is wrong, and a good one survives the round trip and scores the same."""

from __future__ import annotations

import math
from typing import Any

import pytest

from clinops_lib.exceptions import ServiceError
from clinops_lib.services._logreg import StandardisedLogit
from clinops_lib.services.subject_risk import SUBJECT_ARTIFACT_FORMAT, SubjectRiskModel
from clinops_lib.services.synthetic import FEATURES
from clinops_lib.services.training import ARTIFACT_FORMAT, RiskModel

pytestmark = pytest.mark.unit

N = len(FEATURES)


def _risk() -> RiskModel:
    return RiskModel(version="2.0.0", features=FEATURES, mean=(1.0,) * N, scale=(2.0,) * N,
                     coef=tuple(0.1 * i for i in range(N)), intercept=-0.5)


def _subject() -> SubjectRiskModel:
    return SubjectRiskModel(version="1.0.0", feature_view="subject_stats", features=("a", "b"),
                            mean=(0.0, 1.0), scale=(1.0, 0.5), coef=(0.3, -0.2), intercept=0.1)


MODELS: list[tuple[type[StandardisedLogit], Any, str]] = [
    (RiskModel, _risk, ARTIFACT_FORMAT),
    (SubjectRiskModel, _subject, SUBJECT_ARTIFACT_FORMAT),
]


@pytest.mark.parametrize(("cls", "make", "fmt"), MODELS)
def test_round_trip_and_score(cls: Any, make: Any, fmt: str) -> None:
    model = make()
    doc = model.to_artifact()
    assert doc["format"] == fmt
    assert cls.from_artifact(doc) == model
    values = {n: float(i) for i, n in enumerate(model.features)}
    z = model.intercept + sum(c * (values[n] - m) / s for n, m, s, c in
                              zip(model.features, model.mean, model.scale, model.coef, strict=True))
    assert model.score(values) == pytest.approx(1 / (1 + math.exp(-z)))


@pytest.mark.parametrize(("cls", "make", "fmt"), MODELS)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: [], "expected a JSON object"),
        (lambda d: {**d, "format": "pickle"}, "format 'pickle'"),
        (lambda d: {k: v for k, v in d.items() if k != "coef"}, "missing field(s) coef"),
        (lambda d: {**d, "mean": d["mean"][:-1]}, "mean has"),
        (lambda d: {**d, "scale": [0.0] * len(d["scale"])}, "scale must be positive"),
        (lambda d: {**d, "features": [], "mean": [], "scale": [], "coef": []}, "features"),
    ],
)
def test_a_bad_artifact_is_refused_naming_what_is_wrong(cls: Any, make: Any, fmt: str, change: Any,
                                                         message: str) -> None:
    with pytest.raises(ServiceError) as err:
        cls.from_artifact(change(make().to_artifact()))
    assert message in str(err.value) and str(err.value).startswith(cls.LABEL)


def test_serving_model_refuses_features_other_than_the_serving_schema() -> None:
    doc = {**_risk().to_artifact(), "features": ["x"] * N}
    with pytest.raises(ServiceError, match="differ from the serving schema"):
        RiskModel.from_artifact(doc)


def test_subject_model_needs_its_feature_view_and_every_online_value() -> None:
    doc = {k: v for k, v in _subject().to_artifact().items() if k != "feature_view"}
    with pytest.raises(ServiceError, match="missing field.s. feature_view"):
        SubjectRiskModel.from_artifact(doc)
    with pytest.raises(ServiceError, match="b"):
        _subject().score({"a": 1.0, "b": None})
