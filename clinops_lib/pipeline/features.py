"""The per-subject feature table: one definition shared by Spark, Feast, training and serving.

Why one module: the Spark job writes these columns, the Feast feature view declares them, the
training job fits on them in this order and model-serving asks the feature server for them by
name. Pure data, no third-party imports, so every side can import it.
"""

from __future__ import annotations

__all__ = [
    "ENTITY",
    "FEATURE_VIEW",
    "LABEL",
    "OBJECT_KEY",
    "SUBJECT_FEATURES",
    "TIMESTAMP",
    "STAGING_PREFIX",
    "feature_refs",
    "staged",
]

ENTITY = "subject_id"
TIMESTAMP = "event_timestamp"  # the subject's latest observation
FEATURE_VIEW = "subject_vitals"
#: Where the Spark job puts the table in the feature-store bucket. One object, overwritten per
#: run: the bucket is versioned, so every run's table is kept (GxP) and Feast reads the latest.
OBJECT_KEY = "offline/subject_vitals/subject_vitals.parquet"
#: The Spark job writes every table under this prefix first; the data-quality gate copies the exact
#: version it validated to the published key (Feast's source, the training data) only when every
#: expectation is met, so nothing downstream ever reads a table the gate did not pass.
STAGING_PREFIX = "staging/"

#: Model features in coefficient order (all float64 in the table).
SUBJECT_FEATURES: tuple[str, ...] = (
    "visits",
    "systolic_bp_mean",
    "diastolic_bp_mean",
    "heart_rate_mean",
    "temperature_c_max",
    "weight_kg_last",
    "alt_u_l_max",
    "creatinine_mg_dl_max",
)
#: Label column (kept in the table, not in the feature view): any adverse event reported.
LABEL = "adverse_events"


def staged(key: str) -> str:
    """Where the Spark job puts ``key``'s table before the data-quality gate publishes it."""
    return STAGING_PREFIX + key


def feature_refs() -> list[str]:
    """``view:feature`` references, as Feast's online and historical retrieval take them."""
    return [f"{FEATURE_VIEW}:{name}" for name in SUBJECT_FEATURES]
