"""Synthetic clinical-trial data: one source of realistic, entirely fictitious values.

Why one module: the gateway's reference data (which sites run which study), the drills'
load generator (payloads the gateway accepts), the training job (a labelled data set) and
model-serving's request schema must agree on names and plausible ranges. Generating all of
them here keeps them consistent and means no real patient data ever enters the platform,
its tests or its evidence bundles.

* :func:`observation_payload` / :func:`prediction_payload` — one request body, from a
  ``random.Random`` so a load generator with a fixed seed sends a reproducible stream.
* :func:`training_data` — a labelled numpy data set whose adverse-event risk follows a
  known logistic law over :data:`FEATURES`, so a trained model's AUC is meaningful.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np

__all__ = [
    "FEATURES",
    "REFERENCE_STUDIES",
    "TRUE_COEFFICIENTS",
    "TRUE_INTERCEPT",
    "observation_payload",
    "prediction_payload",
    "sigmoid",
    "training_data",
]

#: Studies and the sites enrolled in each: the gateway seeds Redis with this when it is empty.
REFERENCE_STUDIES: dict[str, tuple[str, ...]] = {
    "CT-ONC-0421": ("SITE-001", "SITE-002", "SITE-003", "SITE-004"),
    "CT-CARD-0107": ("SITE-002", "SITE-005", "SITE-006"),
    "CT-NEU-0333": ("SITE-007", "SITE-008", "SITE-009", "SITE-010"),
}

#: Model features, in the order of the trained coefficient vector.
FEATURES: tuple[str, ...] = (
    "age_years",
    "weight_kg",
    "systolic_bp",
    "diastolic_bp",
    "heart_rate",
    "temperature_c",
    "alt_u_l",
    "creatinine_mg_dl",
    "dose_mg",
    "prior_adverse_events",
)

# (mean, sd, low, high) of each continuous feature; clipped to physiologically plausible ranges.
_DIST: dict[str, tuple[float, float, float, float]] = {
    "age_years": (54.0, 13.0, 18.0, 90.0),
    "weight_kg": (78.0, 15.0, 40.0, 160.0),
    "systolic_bp": (128.0, 16.0, 90.0, 200.0),
    "diastolic_bp": (80.0, 10.0, 50.0, 120.0),
    "heart_rate": (74.0, 11.0, 45.0, 140.0),
    "temperature_c": (36.8, 0.45, 35.5, 40.0),
    "alt_u_l": (28.0, 14.0, 5.0, 250.0),
    "creatinine_mg_dl": (0.95, 0.25, 0.4, 3.5),
    "dose_mg": (150.0, 60.0, 25.0, 400.0),
}
_DOSES = (25.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0)

#: The law the labels follow (per standardised unit), so training has a known optimum.
TRUE_COEFFICIENTS: dict[str, float] = {
    "age_years": 0.45,
    "weight_kg": -0.10,
    "systolic_bp": 0.30,
    "diastolic_bp": 0.05,
    "heart_rate": 0.20,
    "temperature_c": 0.35,
    "alt_u_l": 0.55,
    "creatinine_mg_dl": 0.40,
    "dose_mg": 0.70,
    "prior_adverse_events": 0.60,
}
TRUE_INTERCEPT = -1.3


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _draw(rng: random.Random, name: str, digits: int) -> float:
    mean, sd, low, high = _DIST[name]
    return round(_clip(rng.gauss(mean, sd), low, high), digits)


def observation_payload(rng: random.Random, *, now: datetime | None = None) -> dict[str, object]:
    """One valid body for ``POST /v1/observations`` (clinical-gateway).

    Site and study come from :data:`REFERENCE_STUDIES`, so the gateway accepts it; values
    are plausible but fictitious. ``now`` pins ``observed_at`` for reproducible tests.
    """
    study = rng.choice(sorted(REFERENCE_STUDIES))
    site = rng.choice(REFERENCE_STUDIES[study])
    systolic = int(_draw(rng, "systolic_bp", 0))
    diastolic = min(int(_draw(rng, "diastolic_bp", 0)), systolic - 10)
    observed = (now or datetime.now(UTC)) - timedelta(minutes=rng.randint(1, 7 * 24 * 60))
    labs: dict[str, float] = {
        "hemoglobin_g_dl": round(_clip(rng.gauss(13.5, 1.5), 6.0, 20.0), 1),
        "alt_u_l": _draw(rng, "alt_u_l", 0),
        "creatinine_mg_dl": _draw(rng, "creatinine_mg_dl", 2),
        "glucose_mg_dl": round(_clip(rng.gauss(98, 18), 50, 400), 0),
    }
    return {
        "study_id": study,
        "site_id": site,
        "subject_id": f"{site}-{rng.randint(1, 999):04d}",
        "visit": rng.randint(1, 12),
        "observed_at": observed.isoformat(timespec="seconds"),
        "vitals": {
            "systolic_bp": systolic,
            "diastolic_bp": diastolic,
            "heart_rate": int(_draw(rng, "heart_rate", 0)),
            "temperature_c": _draw(rng, "temperature_c", 1),
            "weight_kg": _draw(rng, "weight_kg", 1),
        },
        "labs": labs,
        "adverse_event": rng.random() < 0.08,
    }


def prediction_payload(rng: random.Random) -> dict[str, float | int]:
    """One valid body for ``POST /v1/predict`` (model-serving): every name in :data:`FEATURES`."""
    body: dict[str, float | int] = {
        name: _draw(rng, name, 2) for name in FEATURES if name not in ("dose_mg", "prior_adverse_events")
    }
    body["diastolic_bp"] = min(body["diastolic_bp"], body["systolic_bp"] - 10)
    body["dose_mg"] = rng.choice(_DOSES)
    body["prior_adverse_events"] = min(5, int(rng.expovariate(1.5)))
    return body


def training_data(seed: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """A labelled data set ``(X, y)`` in :data:`FEATURES` order, reproducible from ``seed``.

    Labels follow :data:`TRUE_COEFFICIENTS` on standardised features, so a logistic model
    can recover them and its holdout AUC says something real (about 0.8, not 1.0: the
    labels are Bernoulli draws, as outcomes are).
    """
    if samples < 100:
        raise ValueError(f"samples={samples}: need at least 100 to train and evaluate")
    rng = np.random.default_rng(seed)
    columns = []
    for name in FEATURES:
        if name == "dose_mg":
            col = rng.choice(np.array(_DOSES), size=samples)
        elif name == "prior_adverse_events":
            col = np.minimum(5, np.floor(rng.exponential(1 / 1.5, size=samples)))
        else:
            mean, sd, low, high = _DIST[name]
            col = np.clip(rng.normal(mean, sd, size=samples), low, high)
        columns.append(col)
    x = np.column_stack(columns).astype(np.float64)
    x[:, FEATURES.index("diastolic_bp")] = np.minimum(
        x[:, FEATURES.index("diastolic_bp")], x[:, FEATURES.index("systolic_bp")] - 10
    )
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    logit = TRUE_INTERCEPT + z @ np.array([TRUE_COEFFICIENTS[n] for n in FEATURES])
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(samples) < p).astype(np.float64)
    return x, y


def sigmoid(value: float) -> float:
    """Numerically safe logistic function for one score (serving's hot path, no numpy)."""
    if value >= 0:
        return 1 / (1 + math.exp(-value))
    e = math.exp(value)
    return e / (1 + e)
