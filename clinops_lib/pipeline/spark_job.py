"""The Level 2 batch job: stored observations -> clean -> per-subject features -> Parquet on S3.

``python -m clinops_lib.pipeline.spark_job`` (in ``.venv-pipeline``) runs Spark in local mode:

1. **read** ``clinical_observations`` from PostgreSQL over JDBC (Debian's PostgreSQL driver,
   ``/usr/share/java/postgresql.jar``); the JSONB vitals and labs are unpacked in the pushed-down
   query because Spark's JDBC source has no JSONB type;
2. **clean**: one row per (study, subject, visit) — the latest received wins, so a site's
   resubmission replaces its earlier row —, rows without complete vitals dropped, diastolic
   not below systolic dropped (the gateway refuses them; a row written around it must not
   reach a model);
3. **aggregate** per subject: :data:`~clinops_lib.pipeline.features.SUBJECT_FEATURES`, the
   label and the latest observation time as Feast's event timestamp;
4. **write** Parquet (one file each, microsecond timestamps that pyarrow and Feast read): the
   feature table and the cleaned observations, *staged* in the feature-store bucket
   (:func:`~clinops_lib.pipeline.features.staged` of
   :data:`~clinops_lib.pipeline.features.OBJECT_KEY` and of :data:`CLEAN_OBJECT_KEY`). The DAG's
   next task, the data-quality gate (:mod:`.quality`), checks both and publishes them at those
   keys (where Feast and training read) only when every expectation is met.

Why the upload is boto3 and not Spark's ``s3a://``: writing to S3 from Spark needs hadoop-aws
and the AWS SDK bundle (~500 MB of jars) for one small file; Spark writes the Parquet locally
in the job's work dir, and the object in S3 is byte-for-byte that file (its sha256 is printed
and stored as object metadata).

Prints one JSON line with the counts (read, kept, subjects) and the object's version id.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import PipelineConfig
from .features import ENTITY, LABEL, OBJECT_KEY, SUBJECT_FEATURES, TIMESTAMP, staged

__all__ = [
    "CLEAN_OBJECT_KEY",
    "JDBC_JAR",
    "JVM_FLAGS",
    "OBSERVATIONS_QUERY",
    "build_features",
    "clean_observations",
    "main",
    "run",
    "subject_features",
]

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
#: Where the cleaned observations (the rows the features are computed from) go in the feature-store
#: bucket, so the data-quality gate (:mod:`.quality`) checks exactly what was aggregated.
CLEAN_OBJECT_KEY = "offline/clean_observations/clean_observations.parquet"
#: The driver JVM's flags for a short local run (the Kafka broker uses the same two).
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

OBSERVATIONS_QUERY = """
SELECT id, study_id, subject_id, visit, observed_at, received_at, adverse_event,
       (vitals->>'systolic_bp')::double precision   AS systolic_bp,
       (vitals->>'diastolic_bp')::double precision  AS diastolic_bp,
       (vitals->>'heart_rate')::double precision    AS heart_rate,
       (vitals->>'temperature_c')::double precision AS temperature_c,
       (vitals->>'weight_kg')::double precision     AS weight_kg,
       (labs->>'alt_u_l')::double precision         AS alt_u_l,
       (labs->>'creatinine_mg_dl')::double precision AS creatinine_mg_dl
FROM clinical_observations
"""


def spark_session(app: str = "clinops-subject-features") -> Any:
    """A small local-mode session: 2 cores, 512 MiB driver, no UI, UTC, JDBC driver on the classpath."""
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName(app)
        .config("spark.driver.memory", "512m")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.jars", str(JDBC_JAR))
        # a short batch run: the serial GC (no GC threads competing for 2 cores) and the C1 JIT
        # only (C2's compile threads cost more CPU than they win back in a job of seconds)
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC " + " ".join(JVM_FLAGS))
        .getOrCreate()
    )


def clean_observations(observations: Any) -> Any:
    """One row per (study, subject, visit), the latest received; complete vitals; diastolic below systolic."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = Window.partitionBy("study_id", "subject_id", "visit").orderBy(
        F.col("received_at").desc(), F.col("id").desc()
    )
    vitals = ["systolic_bp", "diastolic_bp", "heart_rate", "temperature_c", "weight_kg"]
    return (
        observations.withColumn("_rank", F.row_number().over(latest))
        .where(F.col("_rank") == 1)
        .drop("_rank")
        .dropna(subset=vitals)
        .where(F.col("diastolic_bp") < F.col("systolic_bp"))
    )


def subject_features(clean: Any) -> Any:
    """Aggregate cleaned observations per subject (the feature table Feast and training read)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_time = Window.partitionBy("subject_id").orderBy(F.col("observed_at").desc())
    clean = clean.withColumn("_newest", F.row_number().over(by_time))
    out = clean.groupBy("subject_id").agg(
        F.count(F.lit(1)).cast("double").alias("visits"),
        F.avg("systolic_bp").alias("systolic_bp_mean"),
        F.avg("diastolic_bp").alias("diastolic_bp_mean"),
        F.avg("heart_rate").alias("heart_rate_mean"),
        F.max("temperature_c").alias("temperature_c_max"),
        F.max(F.when(F.col("_newest") == 1, F.col("weight_kg"))).alias("weight_kg_last"),
        F.coalesce(F.max("alt_u_l"), F.lit(0.0)).alias("alt_u_l_max"),
        F.coalesce(F.max("creatinine_mg_dl"), F.lit(0.0)).alias("creatinine_mg_dl_max"),
        F.sum(F.col("adverse_event").cast("int")).cast("long").alias(LABEL),
        F.max("observed_at").alias(TIMESTAMP),
    )
    return out.withColumnRenamed("subject_id", ENTITY).select(ENTITY, *SUBJECT_FEATURES, LABEL, TIMESTAMP)


def build_features(observations: Any) -> Any:
    """Clean observations and aggregate them per subject (a Spark DataFrame in, one out)."""
    return subject_features(clean_observations(observations))


def run(cfg: PipelineConfig, s3: Any) -> dict[str, Any]:
    """Read, clean, aggregate, write, upload; returns the summary printed by :func:`main`."""
    t0 = time.monotonic()
    if not JDBC_JAR.exists():
        raise FileNotFoundError(
            f"{JDBC_JAR} not found; install Debian's libpostgresql-jdbc-java (scripts/setup.sh does)"
        )
    out_dir = cfg.work_dir / "spark" / "subject_vitals"
    clean_dir = cfg.work_dir / "spark" / "clean_observations"
    for folder in (out_dir, clean_dir):
        shutil.rmtree(folder, ignore_errors=True)
    spark = spark_session()
    try:
        observations = (
            spark.read.format("jdbc")
            .option("url", cfg.jdbc_url)
            .option("user", cfg.pg_user)
            .option("query", OBSERVATIONS_QUERY)
            .option("driver", "org.postgresql.Driver")
            .load()
            .cache()
        )
        read = observations.count()
        clean = clean_observations(observations).cache()
        clean.coalesce(1).write.mode("overwrite").parquet(str(clean_dir))
        features = subject_features(clean)
        features.coalesce(1).write.mode("overwrite").parquet(str(out_dir))
        kept = spark.read.parquet(str(clean_dir)).count()
        subjects = spark.read.parquet(str(out_dir)).count()
    finally:
        spark.stop()
    clean_put = _upload(s3, cfg.feature_bucket, staged(CLEAN_OBJECT_KEY), clean_dir, kept)
    put = _upload(s3, cfg.feature_bucket, staged(OBJECT_KEY), out_dir, subjects)
    return {
        "event": "spark.features_written",
        "observations_read": read,
        "observations_kept": kept,
        "subjects": subjects,
        "object": f"s3://{cfg.feature_bucket}/{staged(OBJECT_KEY)}",
        "version_id": put["version_id"],
        "sha256": put["sha256"],
        "clean_object": f"s3://{cfg.feature_bucket}/{staged(CLEAN_OBJECT_KEY)}",
        "clean_version_id": clean_put["version_id"],
        "published_by": "the data-quality gate (clinops_lib.pipeline.quality), when every expectation is met",
        "seconds": round(time.monotonic() - t0, 2),
    }


def _upload(s3: Any, bucket: str, key: str, folder: Path, rows: int) -> dict[str, str]:
    """Put the one Parquet part file Spark wrote in ``folder`` at ``key`` (sha256 as metadata)."""
    parts = sorted(folder.glob("part-*.parquet"))
    if len(parts) != 1:
        raise RuntimeError(f"expected one Parquet part file in {folder}, found {len(parts)}")
    body = parts[0].read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    put = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType="application/vnd.apache.parquet",
        Metadata={"sha256": digest, "rows": str(rows)},
    )
    return {"version_id": str(put.get("VersionId", "")), "sha256": digest}


def s3_client(cfg: PipelineConfig) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=cfg.s3_endpoint or None)


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m clinops_lib.pipeline.spark_job", description=__doc__).parse_args(
        argv
    )
    cfg = PipelineConfig.from_env()
    try:
        summary = run(cfg, s3_client(cfg))
    except Exception as e:  # noqa: BLE001 - the job's exit status and last line say what failed
        print(json.dumps({"event": "spark.failed", "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
