"""The environment of one pipeline job, read once (the jobs are processes of their own venv).

The local target (and the Airflow DAG it configures) hands every job the same variables;
reading them here, and nowhere else in the pipeline, keeps each job's wiring explicit. DSNs may
carry passwords on other targets, so they stay out of ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["PipelineConfig"]


@dataclass(frozen=True)
class PipelineConfig:
    """Where a job finds PostgreSQL, Redis, S3, MLflow, Kafka and its work directory."""

    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "clinops"
    pg_database: str = "clinops"
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    s3_endpoint: str = ""
    feature_bucket: str = "clinops-dev-feature-store"
    mlflow_url: str = ""
    kafka_bootstrap: str = ""
    work_dir: Path = Path(".")
    model_name: str = "clinops-subject-risk"
    model_alias: str = "champion"

    @property
    def pg_dsn(self) -> str:
        return f"postgresql://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def feast_repo(self) -> Path:
        """The Feast repository (feature_store.yaml + registry) the jobs and the feature server share."""
        return self.work_dir / "feast"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineConfig:
        env = os.environ if environ is None else environ
        try:
            pg_port = int(env.get("CLINOPS_PG_PORT", "5432"))
        except ValueError as e:
            raise ConfigError(f"CLINOPS_PG_PORT={env.get('CLINOPS_PG_PORT')!r} is not a port number") from e
        work = env.get("CLINOPS_PIPELINE_DIR", "")
        if not work:
            raise ConfigError(
                "CLINOPS_PIPELINE_DIR is not set (the pipeline's work directory in the state dir)"
            )
        return cls(
            pg_host=env.get("CLINOPS_PG_HOST", "127.0.0.1"),
            pg_port=pg_port,
            pg_user=env.get("CLINOPS_PG_USER", "clinops"),
            pg_database=env.get("CLINOPS_PG_DATABASE", "clinops"),
            redis_url=env.get("CLINOPS_REDIS_URL", "redis://127.0.0.1:6379/0"),
            s3_endpoint=env.get("AWS_ENDPOINT_URL", ""),
            feature_bucket=env.get("CLINOPS_BUCKET_FEATURE_STORE", "clinops-dev-feature-store"),
            mlflow_url=env.get("CLINOPS_MLFLOW_URL", ""),
            kafka_bootstrap=env.get("CLINOPS_KAFKA_BOOTSTRAP", ""),
            work_dir=Path(work),
            model_name=env.get("CLINOPS_MODEL_NAME", "clinops-subject-risk"),
            model_alias=env.get("CLINOPS_MODEL_ALIAS", "champion"),
        )
