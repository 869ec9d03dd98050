"""The data and ML pipeline (Levels 1-5 beyond the services): Kafka events, Spark, Feast, MLflow, Airflow.

Observations stored by the clinical-gateway (PostgreSQL, plus one Kafka event each) become
per-subject features in a Spark batch job (:mod:`.spark_job`, Parquet staged in the
feature-store bucket), pass the data-quality gate (:mod:`.quality`: the repository's
great-expectations suites; only a table that meets every expectation is published), are
registered and materialised into the Redis online store by Feast
(:mod:`.feature_store`), train a model that is logged and registered in MLflow
(:mod:`.train`), and model-serving scores a subject from the online features with the model
version the registry's alias points at. The Airflow DAG (``dags/clinops_pipeline.py``) runs the
jobs in order; :mod:`.kafka_consumer` is the consumer group that persists the events.

Why these modules run in their own virtual environment (``.venv-pipeline``): Spark, Feast and
the MLflow server pin pyarrow, pandas, SQLAlchemy and protobuf ranges of their own. The jobs
are started as ``python -m clinops_lib.pipeline.<job>`` with ``PYTHONPATH`` at the project
root; they import nothing of the orchestration side, only :mod:`.config`,
:mod:`.features` and the model maths of :mod:`clinops_lib.services.training`.
"""

__all__: list[str] = []
