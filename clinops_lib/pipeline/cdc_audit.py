"""The completeness audit the CDC topic makes possible (Level 1): the table's changelog against the
gateway's own events.

Two streams leave the gateway's writes (see :mod:`clinops_lib.targets.local.kafka_connect`): the
gateway's ``observation.received`` events (best effort: dropped and counted when the broker is
down or the publisher's queue is full; persisted by the consumer group to ``observation_events``)
and Debezium's changelog of ``clinical_observations`` (every committed change, read from the WAL).
:func:`audit` reads both and the table itself, and answers the auditor's two questions:

* is every stored observation in the changelog? (``missing_from_changelog`` must be empty; an id
  there means the CDC path lost a row, or has not caught up within ``timeout``);
* which stored observations have no gateway event? (``without_gateway_event``: events the gateway
  dropped, or rows written by something other than the gateway; the consumer group may also
  still be behind: the audit reports what it saw when it ran).

It reads the topic from its beginning without a consumer group (an audit moves nobody's
offsets), up to the newest change of every row the table held when the audit started, or until
``timeout``. Change events are Debezium's JSON without embedded schema (the worker's converter
setting): ``{"before", "after", "source", "op", ...}``; a tombstone (``None`` value) follows a
delete.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

__all__ = ["CdcAudit", "audit"]


@dataclass(frozen=True)
class CdcAudit:
    """What :func:`audit` saw; the id lists are sorted and hold at most ``shown`` ids each."""

    rows_in_table: int
    change_events: int
    operations: dict[str, int]
    missing_from_changelog: list[int] = field(default_factory=list)
    without_gateway_event: list[int] = field(default_factory=list)
    missing_count: int = 0
    without_event_count: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Every row the table held when the audit started is in the changelog."""
        return self.missing_count == 0


async def _read_changelog(
    bootstrap: str, topic: str, wanted: set[int], deadline: float
) -> tuple[set[int], dict[str, int], int]:
    """Ids seen in insert/snapshot/update events, counts per operation, events read."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    seen: set[int] = set()
    ops: dict[str, int] = {}
    events = 0

    def take(batches: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        nonlocal events
        for records in batches.values():
            for rec in records:
                events += 1
                value = json.loads(rec.value) if rec.value else None
                op = str(value.get("op", "?")) if value else "tombstone"
                ops[op] = ops.get(op, 0) + 1
                row = (value or {}).get("after") or {}
                if op in ("c", "r", "u") and isinstance(row.get("id"), int):
                    seen.add(row["id"])

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        # Connect creates the topic with the first change: wait for it while rows are expected
        while topic not in await consumer.topics():
            if not wanted or time.monotonic() >= deadline:
                return seen, ops, events  # no changelog (yet): an empty table, or reported missing
            await asyncio.sleep(0.5)
        # subscribed without a group: every partition is this consumer's, read from the beginning
        consumer.subscribe([topic])
        while time.monotonic() < deadline and (not consumer.assignment() or not wanted <= seen):
            take(await consumer.getmany(timeout_ms=500, max_records=1000))
        # then to the end offsets of this moment, so the counts cover the whole changelog so far
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps) if tps else {}
        while time.monotonic() < deadline and any([await consumer.position(tp) < ends[tp] for tp in tps]):
            take(await consumer.getmany(timeout_ms=500, max_records=1000))
    finally:
        await consumer.stop()
    return seen, ops, events


def audit(bootstrap: str, topic: str, pg_dsn: str, *, timeout: float = 60.0, shown: int = 50) -> CdcAudit:
    """Compare the table, its changelog on ``topic`` and the persisted gateway events (see the module)."""
    import psycopg

    from ..services.gateway import OBSERVATIONS_TABLE
    from .kafka_consumer import EVENTS_TABLE

    t0 = time.monotonic()
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=5) as conn:
        table_ids = {int(r[0]) for r in conn.execute(f"SELECT id FROM {OBSERVATIONS_TABLE}")}  # noqa: S608 - constant
        has_events = conn.execute("SELECT to_regclass(%s)", (EVENTS_TABLE,)).fetchone()
        event_ids: set[int] = set()
        if has_events and has_events[0] is not None:
            event_ids = {int(r[0]) for r in conn.execute(
                f"SELECT DISTINCT observation_id FROM {EVENTS_TABLE} WHERE observation_id IS NOT NULL")}  # noqa: S608
    # on a private thread with its own loop: a runbook cell already runs inside an event loop
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinops-cdc-audit") as pool:
        read = _read_changelog(bootstrap, topic, table_ids, t0 + timeout)
        seen, ops, events = pool.submit(asyncio.run, read).result()
    missing = sorted(table_ids - seen)
    without = sorted((table_ids & seen) - event_ids)
    return CdcAudit(
        rows_in_table=len(table_ids), change_events=events, operations=dict(sorted(ops.items())),
        missing_from_changelog=missing[:shown], without_gateway_event=without[:shown],
        missing_count=len(missing), without_event_count=len(without), seconds=time.monotonic() - t0,
    )
