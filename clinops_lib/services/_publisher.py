"""The bounded-queue background publisher both of the gateway's event buses share.

Why: a request must never wait on a message bus (SNS or Kafka), and a bus that is down must
neither grow the gateway's memory nor take it down. So every bus gets the same machine:

* ``submit`` puts the event on a bounded :class:`asyncio.Queue` without waiting; a full queue
  drops the event and counts it (reason ``queue_full``);
* one background task takes events off the queue — up to :attr:`BATCH_MAX` at a time, waiting
  at most :attr:`LINGER_S` for company — and hands them to the subclass's :meth:`_send`, which
  counts what the bus refused through :meth:`_drop`;
* ``stop`` flushes what is queued for at most ``flush_timeout_s`` seconds, cancels the task and
  counts what is still queued as dropped (reason ``shutdown``), so a shutdown is bounded even
  when the bus never answers.

The stored PostgreSQL row stays the record: a dropped event is a counted gap in a
notification stream, never a lost observation. Subclasses say only how to reach their bus:
:meth:`_send` (required), :meth:`_connect` (once, before the first batch) and :meth:`_close`
(after the task has stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

from prometheus_client import Counter, Gauge

from ._common import ServiceRuntime

__all__ = ["BackgroundPublisher"]


class BackgroundPublisher:
    """Bounded queue + one sending task + drop counting + bounded flush; see the module docstring."""

    #: Name of the background task (seen in asyncio debug output and task dumps).
    TASK_NAME: ClassVar[str] = "publisher"
    #: The most events one :meth:`_send` call receives.
    BATCH_MAX: ClassVar[int] = 1
    #: The longest the first event of a batch waits for more before the batch is sent.
    LINGER_S: ClassVar[float] = 0.0

    def __init__(
        self, runtime: ServiceRuntime, *, dropped: Counter, depth: Gauge | None = None, maxsize: int = 10_000
    ) -> None:
        self._rt = runtime
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self._task: asyncio.Task[None] | None = None
        self._dropped = dropped  # labels: service, version, reason
        self._depth = depth.labels(runtime.metrics.service, runtime.metrics.version) if depth else None

    @property
    def enabled(self) -> bool:
        """False when the bus is not configured: ``submit`` then ignores events, nothing starts."""
        raise NotImplementedError

    # -- the request side ------------------------------------------------------------------------
    def submit(self, event: dict[str, Any]) -> None:
        """Queue one event without waiting; a full queue drops it (counted, reason ``queue_full``)."""
        if not self.enabled:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._drop("queue_full", 1)
        self._show_depth()

    def _drop(self, reason: str, n: int) -> None:
        m = self._rt.metrics
        self._dropped.labels(m.service, m.version, reason).inc(n)

    def _show_depth(self) -> None:
        if self._depth is not None:
            self._depth.set(self._queue.qsize())

    # -- the background side ---------------------------------------------------------------------
    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name=self.TASK_NAME)

    async def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Flush what is queued (at most ``flush_timeout_s``), then stop; what is left is counted
        as dropped (reason ``shutdown``) and the bus connection is closed (bounded the same way)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), flush_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if left := self._queue.qsize():
            self._drop("shutdown", left)
        self._show_depth()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._close(), flush_timeout_s)

    async def _run(self) -> None:
        await self._connect()
        while True:
            batch = await self._next_batch()
            try:
                await self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
                self._show_depth()

    async def _next_batch(self) -> list[dict[str, Any]]:
        """Wait for one event, then take more for at most :attr:`LINGER_S` (up to :attr:`BATCH_MAX`)."""
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.LINGER_S
        while len(batch) < self.BATCH_MAX:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    # -- the hooks -------------------------------------------------------------------------------
    async def _connect(self) -> None:
        """Reach the bus before the first batch (may retry for as long as it takes)."""

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        """Deliver ``batch``; count what the bus refused with :meth:`_drop` instead of raising."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Release the bus connection after the task has stopped."""
