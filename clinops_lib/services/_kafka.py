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

__all__ = ["KafkaEventProducer"]


class KafkaEventProducer:
    """Background, drop-safe producer; disabled when no bootstrap server or topic is configured."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        bootstrap: str,
        topic: str,
        *,
        maxsize: int = 10_000,
        producer: Any = None,
    ) -> None:
        self._rt = runtime
        self._bootstrap = bootstrap
        self._topic = topic
        self._producer = producer
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self._task: asyncio.Task[None] | None = None
        m = runtime.metrics
        self._sent = m.counter("clinops_kafka_events_published", "Events acknowledged by Kafka").labels(
            m.service, m.version
        )
        self._dropped = m.counter(
            "clinops_kafka_events_dropped", "Kafka events not delivered, by reason", ["reason"]
        )

    @property
    def enabled(self) -> bool:
        return bool(self._bootstrap and self._topic)

    def submit(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop("queue_full", 1)

    def _drop(self, reason: str, n: int) -> None:
        m = self._rt.metrics
        self._dropped.labels(m.service, m.version, reason).inc(n)

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="kafka-producer")

    async def stop(self, flush_timeout_s: float = 5.0) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), flush_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if left := self._queue.qsize():
            self._drop("shutdown", left)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), flush_timeout_s)

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

    async def _run(self) -> None:
        await self._connect()
        while True:
            event = await self._queue.get()
            try:
                key = str(event.get("subject_id", "")).encode()
                await self._producer.send_and_wait(
                    self._topic, json.dumps(event, separators=(",", ":")).encode(), key=key
                )
                self._sent.inc()
            except Exception as e:  # noqa: BLE001 - counted; the stored row stays the record
                self._drop("send_failed", 1)
                self._rt.log.event("kafka.send_failed", level="warning", exception=type(e).__name__)
            finally:
                self._queue.task_done()
