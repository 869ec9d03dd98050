"""The Level 3 Feast feature repository: Parquet offline source on S3, Redis online store.

The repository is generated, not checked in as YAML: its addresses (Redis port, LocalStack
endpoint, registry path) belong to one running platform, so :func:`write_repo` renders
``feature_store.yaml`` into the pipeline's work dir from :class:`~.config.PipelineConfig`, and
the definitions below are applied from Python. The feature server (``feast serve``, a
supervised component) and every job read that same directory and registry.

``python -m clinops_lib.pipeline.feature_store apply|materialize`` (in ``.venv-pipeline``):

* ``apply`` registers the entity, the S3 Parquet source and the feature view;
* ``serve --host H --port P`` applies, then runs the feature server (``feast serve``'s server)
  in the same process: Feast is imported once, not once for ``apply`` and again for the
  ``feast`` CLI (each import is ~5 CPU-seconds, the larger part of the server's start);
* ``materialize`` (the job the DAG runs) applies, then loads the latest value of every
  feature per subject from the offline source into Redis. It prints the number of subjects
  now served online, read back from the online store, not assumed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .config import PipelineConfig
from .features import ENTITY, FEATURE_VIEW, OBJECT_KEY, SUBJECT_FEATURES, TIMESTAMP

__all__ = [
    "PROJECT",
    "definitions",
    "feature_store",
    "main",
    "materialize",
    "repo_yaml",
    "serve",
    "write_repo",
]

PROJECT = "clinops"
#: How far back a subject's features stay valid for point-in-time joins and materialisation.
TTL = timedelta(days=365)


def repo_yaml(cfg: PipelineConfig) -> str:
    """``feature_store.yaml`` for this platform (Redis db 1: the gateway's reference data is in db 0)."""
    from urllib.parse import urlsplit

    redis = urlsplit(cfg.redis_url)
    lines = [
        f"project: {PROJECT}",
        f"registry: {cfg.feast_repo / 'registry.db'}",
        "provider: local",
        "online_store:",
        "  type: redis",
        f'  connection_string: "{redis.hostname}:{redis.port},db=1"',
        "offline_store:",
        "  type: file",
        "entity_key_serialization_version: 3",
        "",
    ]
    return "\n".join(lines)


def write_repo(cfg: PipelineConfig) -> None:
    cfg.feast_repo.mkdir(parents=True, exist_ok=True)
    (cfg.feast_repo / "feature_store.yaml").write_text(repo_yaml(cfg))


def definitions(cfg: PipelineConfig) -> list[Any]:
    """Entity, offline source and feature view (their names are fixed in :mod:`.features`)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Float64

    subject = Entity(
        name="subject",
        join_keys=[ENTITY],
        value_type=ValueType.STRING,
        description="A trial subject (site-prefixed id)",
    )
    source = FileSource(
        name="subject_vitals_parquet",
        path=f"s3://{cfg.feature_bucket}/{OBJECT_KEY}",
        file_format=ParquetFormat(),
        timestamp_field=TIMESTAMP,
        s3_endpoint_override=cfg.s3_endpoint or None,
        description="Per-subject aggregates written by the Spark job (clinops_lib.pipeline.spark_job)",
    )
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[subject],
        ttl=TTL,
        schema=[Field(name=n, dtype=Float64) for n in SUBJECT_FEATURES],
        source=source,
        online=True,
    )
    return [subject, source, view]


def feature_store(cfg: PipelineConfig) -> Any:
    from feast import FeatureStore

    write_repo(cfg)
    return FeatureStore(repo_path=str(cfg.feast_repo))


def apply(cfg: PipelineConfig) -> Any:
    store = feature_store(cfg)
    store.apply(definitions(cfg))
    return store


def serve(cfg: PipelineConfig, host: str, port: int, registry_ttl_sec: int = 5) -> None:
    """Apply the definitions, then serve online features over HTTP until stopped (blocks).

    The same server ``feast serve --workers 1 --no-access-log`` runs (gunicorn, one uvicorn
    worker forked from this process, so the worker shares the imports already done here).
    """
    store = apply(cfg)
    store.serve(
        host=host,
        port=port,
        type_="http",
        no_access_log=True,
        workers=1,
        registry_ttl_sec=registry_ttl_sec,
    )


def materialize(cfg: PipelineConfig, now: datetime | None = None) -> dict[str, Any]:
    """Apply, load the offline table's latest values into Redis, count what is online."""
    t0 = time.monotonic()
    store = apply(cfg)
    end = (now or datetime.now(UTC)) + timedelta(minutes=1)
    store.materialize(start_date=end - TTL, end_date=end, feature_views=[FEATURE_VIEW])
    subjects = _offline_subjects(cfg)
    if not subjects:
        return {
            "event": "feast.materialized",
            "feature_view": FEATURE_VIEW,
            "offline_subjects": 0,
            "online_subjects": 0,
            "seconds": round(time.monotonic() - t0, 2),
        }
    online = store.get_online_features(
        features=[f"{FEATURE_VIEW}:{SUBJECT_FEATURES[0]}"],
        entity_rows=[{ENTITY: s} for s in subjects],
    ).to_dict()
    served = sum(1 for v in online[SUBJECT_FEATURES[0]] if v is not None)
    return {
        "event": "feast.materialized",
        "feature_view": FEATURE_VIEW,
        "offline_subjects": len(subjects),
        "online_subjects": served,
        "seconds": round(time.monotonic() - t0, 2),
    }


def _offline_subjects(cfg: PipelineConfig) -> list[str]:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs = pafs.S3FileSystem(
        endpoint_override=cfg.s3_endpoint or None,
        region="us-east-1",
        scheme="http" if cfg.s3_endpoint.startswith("http://") else "https",
    )
    table = pq.read_table(f"{cfg.feature_bucket}/{OBJECT_KEY}", filesystem=fs, columns=[ENTITY])
    return [str(s) for s in table.column(ENTITY).to_pylist()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clinops_lib.pipeline.feature_store", description=__doc__)
    parser.add_argument("command", choices=("apply", "materialize", "write-repo", "serve"))
    parser.add_argument("--host", default="127.0.0.1", help="serve: the address to listen on")
    parser.add_argument("--port", type=int, default=0, help="serve: the port to listen on")
    args = parser.parse_args(argv)
    if args.command == "serve" and not 0 < args.port < 65536:
        parser.error(f"serve needs --port between 1 and 65535, not {args.port}")
    cfg = PipelineConfig.from_env()
    if args.command == "serve":
        serve(cfg, args.host, args.port)  # errors end the process with their traceback in the log
        return 0
    try:
        if args.command == "write-repo":
            write_repo(cfg)
            summary: dict[str, Any] = {"event": "feast.repo_written", "repo": str(cfg.feast_repo)}
        elif args.command == "apply":
            apply(cfg)
            summary = {"event": "feast.applied", "repo": str(cfg.feast_repo)}
        else:
            summary = materialize(cfg)
    except Exception as e:  # noqa: BLE001 - the job's exit status and last line say what failed
        print(json.dumps({"event": "feast.failed", "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
