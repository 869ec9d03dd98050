"""The gateway's Kafka producer: one ``observation.received`` event per stored observation.

Why a second bus next to SNS: on the cluster, Level 1's consumers (feature jobs, CDC-style
fan-out) read the ``clinical-observations`` topic; SNS/SQS stay for the AWS-side notifications.
Like the SNS publisher, a request never waits on the broker: events go to a bounded queue and a
background task sends them; when the broker is down or the queue is full the event is dropped
and counted (``clinops_kafka_events_dropped_total``) — the row in PostgreSQL stays the record,
and the Spark job reads PostgreSQL, not the topic. The key is the subject id, so one subject's
events keep their order within a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from ._common import ServiceRuntime
from ._publisher import BackgroundPublisher

__all__ = ["KafkaEventProducer"]


class KafkaEventProducer(BackgroundPublisher):
    """Background, drop-safe producer; disabled when no bootstrap server or topic is configured.

    The queue, the sending task, drop counting and the bounded flush on stop are
    :class:`~._publisher.BackgroundPublisher`'s; this class connects (retrying) and sends one
    event per call, keyed by subject.
    """

    TASK_NAME = "kafka-producer"

    def __init__(
        self,
        runtime: ServiceRuntime,
        bootstrap: str,
        topic: str,
        *,
        maxsize: int = 10_000,
        producer: Any = None,
    ) -> None:
        m = runtime.metrics
        super().__init__(
            runtime,
            dropped=m.counter(
                "clinops_kafka_events_dropped", "Kafka events not delivered, by reason", ["reason"]
            ),
            maxsize=maxsize,
        )
        self._bootstrap = bootstrap
        self._topic = topic
        self._producer = producer
        self._sent = m.counter("clinops_kafka_events_published", "Events acknowledged by Kafka").labels(
            m.service, m.version
        )

    @property
    def enabled(self) -> bool:
        return bool(self._bootstrap and self._topic)

    async def _close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def _connect(self) -> None:
        """Start the producer, retrying every second: the gateway may start before the broker."""
        from aiokafka import AIOKafkaProducer

        attempt = 0
        while self._producer is None:
            attempt += 1
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks=1,
                linger_ms=20,
                request_timeout_ms=5000,
                client_id=self._rt.metrics.service,
            )
            try:
                await producer.start()
                self._producer = producer
                self._rt.log.event("kafka.connected", topic=self._topic)
            except Exception as e:  # noqa: BLE001 - retried; the broker may come up after us
                with contextlib.suppress(Exception):
                    await producer.stop()
                if attempt == 1 or attempt % 30 == 0:
                    self._rt.log.event(
                        "kafka.waiting", level="warning", attempt=attempt, exception=type(e).__name__
                    )
                await asyncio.sleep(1.0)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            try:
                key = str(event.get("subject_id", "")).encode()
                await self._producer.send_and_wait(
                    self._topic, json.dumps(event, separators=(",", ":")).encode(), key=key
                )
                self._sent.inc()
            except Exception as e:  # noqa: BLE001 - counted; the stored row stays the record
                self._drop("send_failed", 1)
                self._rt.log.event("kafka.send_failed", level="warning", exception=type(e).__name__)
