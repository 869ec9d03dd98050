"""The gateway's background publishers (services/_publisher.py and its two buses, SNS and Kafka):
a bounded queue that drops and counts instead of blocking a request, batches within their bound,
a flush on stop that is bounded even when the bus never answers, and the bus's refusals counted.

In-process only: the SNS client and the Kafka producer are small fakes standing for a bus that
answers, refuses or hangs (the real buses are exercised by test_services.py / test_pipeline_local.py).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from clinops_lib.services._common import ServiceConfig, ServiceRuntime
from clinops_lib.services._kafka import KafkaEventProducer
from clinops_lib.services._publisher import BackgroundPublisher
from clinops_lib.services.gateway import EventPublisher

pytestmark = pytest.mark.unit

T = TypeVar("T")
#: A guard against a hang, not a timing limit: an unbounded flush would never return at all.
HANG_GUARD_S = 30.0


def _runtime() -> ServiceRuntime:
    config = ServiceConfig("clinical-gateway", version="1.0.0")
    return ServiceRuntime.create(config, (), log_stream=io.StringIO())


def _sample(rt: ServiceRuntime, name: str, **labels: str) -> float:
    value = rt.metrics.registry.get_sample_value(
        name, {"service": "clinical-gateway", "version": "1.0.0", **labels})
    return value or 0.0


def _run(coro: Callable[[], Awaitable[T]]) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(coro(), HANG_GUARD_S)

    return asyncio.run(guarded())


class _Recorder(BackgroundPublisher):
    """A bus that records every batch; ``gate`` (when set) holds each send until it is opened."""

    TASK_NAME = "test-publisher"

    def __init__(self, rt: ServiceRuntime, *, maxsize: int, batch_max: int = 1, linger_s: float = 0.0,
                 gate: asyncio.Event | None = None) -> None:
        super().__init__(rt, dropped=rt.metrics.counter("test_dropped", "dropped", ["reason"]),
                         depth=rt.metrics.gauge("test_depth", "depth"), maxsize=maxsize)
        self.BATCH_MAX, self.LINGER_S = batch_max, linger_s  # type: ignore[misc]
        self.batches: list[list[dict[str, Any]]] = []
        self.gate = gate
        self.closed = False

    @property
    def enabled(self) -> bool:
        return True

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(batch)

    async def _close(self) -> None:
        self.closed = True


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    rt = _runtime()

    async def scenario() -> _Recorder:
        pub = _Recorder(rt, maxsize=3)  # not started: nothing drains the queue
        for i in range(5):
            pub.submit({"i": i})
        return pub

    pub = _run(scenario)
    assert _sample(rt, "test_dropped_total", reason="queue_full") == 2
    assert _sample(rt, "test_depth") == 3
    assert pub.batches == []


def test_stop_flushes_everything_queued_when_the_bus_answers() -> None:
    rt = _runtime()

    async def scenario() -> _Recorder:
        pub = _Recorder(rt, maxsize=100, batch_max=4, linger_s=0.05)
        pub.start()
        for i in range(10):
            pub.submit({"i": i})
        await pub.stop(flush_timeout_s=HANG_GUARD_S)
        return pub

    pub = _run(scenario)
    assert [e["i"] for b in pub.batches for e in b] == list(range(10))  # every event, in order
    assert max(len(b) for b in pub.batches) <= 4  # never more than BATCH_MAX per send
    assert _sample(rt, "test_dropped_total", reason="shutdown") == 0
    assert pub.closed


def test_the_flush_on_stop_is_bounded_when_the_bus_hangs() -> None:
    rt = _runtime()

    async def scenario() -> _Recorder:
        pub = _Recorder(rt, maxsize=100, gate=asyncio.Event())  # the gate is never opened
        pub.start()
        for i in range(6):
            pub.submit({"i": i})
        while pub._queue.qsize() != 5:  # the task takes the first event and hangs in _send
            await asyncio.sleep(0.01)
        await pub.stop(flush_timeout_s=0.2)
        return pub

    pub = _run(scenario)  # returns at all: the flush gave up
    assert pub.batches == []
    # the event stuck in the hung send was taken off the queue; the 5 behind it are counted
    assert _sample(rt, "test_dropped_total", reason="shutdown") == 5
    assert _sample(rt, "test_depth") == 5
    assert pub.closed


class _FailingSNS:
    def __init__(self) -> None:
        self.calls = 0

    def publish_batch(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise ConnectionError("SNS down")


class _PartialSNS:
    """Accepts every message but the first of each call."""

    def publish_batch(self, PublishBatchRequestEntries: list[dict[str, Any]], **_: Any) -> dict[str, Any]:  # noqa: N803
        return {"Failed": [{"Id": PublishBatchRequestEntries[0]["Id"]}]}


def test_sns_publisher_counts_what_sns_refuses() -> None:
    rt = _runtime()

    async def scenario() -> None:
        pub = EventPublisher(rt, _PartialSNS(), "arn:aws:sns:us-east-1:000000000000:t")
        pub.start()
        for i in range(30):  # one call: 2 messages (25 + 5 events); the first (25 events) refused
            pub.submit({"i": i})
        await pub.stop(flush_timeout_s=HANG_GUARD_S)

    _run(scenario)
    assert _sample(rt, "clinops_events_published_total") == 5
    assert _sample(rt, "clinops_events_dropped_total", reason="publish_failed") == 25


def test_sns_publisher_drops_a_batch_when_sns_is_down_and_is_disabled_without_a_topic() -> None:
    rt = _runtime()
    sns = _FailingSNS()

    async def scenario() -> None:
        off_rt = _runtime()
        off = EventPublisher(off_rt, sns, "")
        off.submit({"i": 0})  # not enabled: ignored, not queued, not counted
        off.start()
        await off.stop()
        assert _sample(off_rt, "clinops_events_dropped_total", reason="queue_full") == 0
        pub = EventPublisher(rt, sns, "arn:aws:sns:us-east-1:000000000000:t")
        pub.start()
        for i in range(3):
            pub.submit({"i": i})
        await pub.stop(flush_timeout_s=HANG_GUARD_S)

    _run(scenario)
    assert sns.calls >= 1
    assert _sample(rt, "clinops_events_dropped_total", reason="publish_failed") == 3
    assert _sample(rt, "clinops_events_published_total") == 0


class _FakeProducer:
    """An aiokafka producer that refuses odd events and records the rest."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.stopped = False

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        if b'"i":1' in value or b'"i":3' in value:
            raise OSError("broker refused")
        self.sent.append((topic, value, key))

    async def stop(self) -> None:
        self.stopped = True


def test_kafka_producer_sends_keyed_events_counts_refusals_and_closes() -> None:
    rt = _runtime()
    producer = _FakeProducer()

    async def scenario() -> None:
        pub = KafkaEventProducer(rt, "127.0.0.1:9092", "clinical-observations", producer=producer)
        pub.start()
        for i in range(5):
            pub.submit({"i": i, "subject_id": f"S-{i}"})
        await pub.stop(flush_timeout_s=HANG_GUARD_S)

    _run(scenario)
    assert [key for _, _, key in producer.sent] == [b"S-0", b"S-2", b"S-4"]
    assert _sample(rt, "clinops_kafka_events_published_total") == 3
    assert _sample(rt, "clinops_kafka_events_dropped_total", reason="send_failed") == 2
    assert producer.stopped


def test_kafka_producer_queue_is_bounded_too() -> None:
    rt = _runtime()

    async def scenario() -> None:
        pub = KafkaEventProducer(rt, "127.0.0.1:9092", "t", maxsize=2, producer=_FakeProducer())
        for i in range(7):  # not started
            pub.submit({"i": i})

    _run(scenario)
    assert _sample(rt, "clinops_kafka_events_dropped_total", reason="queue_full") == 5
