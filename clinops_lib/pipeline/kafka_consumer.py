"""The Level 1 consumer group: persists the gateway's ``observation.received`` events from Kafka.

``python -m clinops_lib.pipeline.kafka_consumer`` (in the project venv: aiokafka and psycopg are
light clients of the main lock) joins the consumer group ``clinops-observation-events`` on the
events topic and writes each event to ``observation_events`` in PostgreSQL, keyed by
(topic, partition, offset), **then** commits the offsets: a crash between the two re-delivers,
and the key makes the re-delivery a no-op (at-least-once delivery, exactly-once rows). The
table is what an auditor compares with ``clinical_observations``: every stored observation
should have its event (the gateway drops an event only when the broker is down, and counts it).

Exits 0 on SIGTERM after committing what it wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["EVENTS_TABLE", "GROUP_ID", "consume", "main"]

GROUP_ID = "clinops-observation-events"
EVENTS_TABLE = "observation_events"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    "offset"       BIGINT NOT NULL,
    observation_id BIGINT,
    subject_id     TEXT,
    event          JSONB NOT NULL,
    consumed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
)
"""
_INSERT = (
    f'INSERT INTO {EVENTS_TABLE} (topic, partition, "offset", observation_id, subject_id, event) '  # noqa: S608 - constant table name
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


async def consume(
    bootstrap: str, topic: str, pg_dsn: str, stop: asyncio.Event, *, batch_ms: int = 500
) -> int:
    """Consume until ``stop`` is set; returns the number of events written."""
    import psycopg
    from aiokafka import AIOKafkaConsumer
    from psycopg.types.json import Jsonb

    written = 0
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(_SCHEMA)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=GROUP_ID,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        print(json.dumps({"event": "consumer.started", "topic": topic, "group": GROUP_ID}), flush=True)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=batch_ms, max_records=500)
                rows: list[tuple[Any, ...]] = []
                for tp, records in batches.items():
                    for rec in records:
                        try:
                            event = json.loads(rec.value)
                        except (TypeError, ValueError):
                            event = {"undecodable": True}
                        rows.append(
                            (
                                tp.topic,
                                tp.partition,
                                rec.offset,
                                event.get("observation_id"),
                                event.get("subject_id"),
                                Jsonb(event),
                            )
                        )
                if rows:
                    async with conn.transaction(), conn.cursor() as cur:
                        await cur.executemany(_INSERT, rows)
                    await consumer.commit()
                    written += len(rows)
                    print(
                        json.dumps({"event": "consumer.persisted", "events": len(rows), "total": written}),
                        flush=True,
                    )
        finally:
            await consumer.stop()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clinops_lib.pipeline.kafka_consumer", description=__doc__
    )
    parser.add_argument("--bootstrap", required=True, help="host:port of a broker")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--pg-dsn", required=True)
    args = parser.parse_args(argv)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await consume(args.bootstrap, args.topic, args.pg_dsn, stop)

    with contextlib.suppress(KeyboardInterrupt):
        total = asyncio.run(run())
        print(json.dumps({"event": "consumer.stopped", "total": total}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
