"""The load generator is open loop: a slow server cannot lower the rate at which requests are due."""

from __future__ import annotations

import asyncio
import threading

import pytest
from ports import PortBlock

from clinops_lib.drills.loadgen import STATUS_DROPPED, LoadGenerator, LoadSpec
from clinops_lib.exceptions import ParameterError

pytestmark = pytest.mark.unit


class TinyServer:
    """A real HTTP/1.1 keep-alive server on loopback, in its own thread.

    ``delay_s`` delays every response; ``error_every`` turns every n-th response into a 500;
    the version header is ``version``. Attributes can be changed while it runs.
    """

    def __init__(self, port: int, version: str = "v1", delay_s: float = 0.0, error_every: int = 0) -> None:
        self.port = port
        self.version = version
        self.delay_s = delay_s
        self.error_every = error_every
        self.served = 0
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TinyServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()
            async with self._server:
                await self._server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.served += 1
                status = b"500 Internal Server Error" if (
                    self.error_every and self.served % self.error_every == 0) else b"200 OK"
                body = b'{"ok":true}'
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                             + b"\r\nX-Clinops-Version: " + self.version.encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(10)


def test_slow_server_does_not_lower_the_scheduling_rate(port_block: PortBlock) -> None:
    rate, duration = 200, 3.0
    with (
        TinyServer(port_block.port(), "fast") as fast,
        TinyServer(port_block.port(), "slow", delay_s=0.25) as slow,
    ):
        g_fast = LoadGenerator(LoadSpec(fast.url, rate=rate, duration_s=duration, label="fast")).start()
        g_slow = LoadGenerator(LoadSpec(slow.url, rate=rate, duration_s=duration, label="slow",
                                        max_in_flight=20)).start()
        s_fast = g_fast.wait(30)
        s_slow = g_slow.wait(30)
    # The same number of requests became due against both servers: the schedule is the clock's.
    assert s_fast.scheduled == pytest.approx(rate * duration, rel=0.02)
    assert s_slow.scheduled == s_fast.scheduled
    # The slow server could take at most 20 / 0.25 = 80 requests/s: the rest are counted as dropped,
    # not silently postponed; nothing is hidden.
    assert s_slow.dropped > 0
    assert s_slow.sent + s_slow.dropped == s_slow.scheduled
    assert s_slow.p50_s is not None and s_fast.p50_s is not None
    assert s_slow.p50_s > 0.25 > s_fast.p50_s
    # Every sent request was sent close to its due time (open loop), on both servers.
    slow_recs = [r for r in g_slow.records() if r.status != STATUS_DROPPED]
    assert all(r.version == "slow" for r in slow_recs if r.status == 200)
    assert s_fast.late <= 0.02 * s_fast.sent
    assert s_fast.achieved_rate / s_fast.requested_rate > 0.97


def test_achieved_rate_matches_requested_and_records_versions_and_errors(port_block: PortBlock) -> None:
    with TinyServer(port_block.port(), "v7", error_every=10) as srv:
        gen = LoadGenerator(LoadSpec(srv.url, rate=300, duration_s=2.0)).start()
        summary = gen.wait(30)
    recs = gen.records()
    assert summary.scheduled == pytest.approx(600, rel=0.02)
    assert summary.achieved_rate / summary.requested_rate == pytest.approx(1.0, abs=0.03)
    assert {r.version for r in recs} == {"v7"}
    errors = sum(1 for r in recs if r.status == 500)
    assert errors == pytest.approx(len(recs) / 10, abs=2)
    assert summary.failed == errors
    assert all(r.sent >= r.scheduled and r.done >= r.sent for r in recs)


def test_connection_refused_is_recorded_not_raised(port_block: PortBlock) -> None:
    gen = LoadGenerator(LoadSpec(f"http://127.0.0.1:{port_block.port()}", rate=50, duration_s=0.5)).start()
    summary = gen.wait(30)
    assert summary.sent > 0
    assert summary.failed == summary.sent
    assert all(r.status == 0 and r.error for r in gen.records())


def test_stop_ends_an_open_ended_run(port_block: PortBlock) -> None:
    with TinyServer(port_block.port()) as srv:
        gen = LoadGenerator(LoadSpec(srv.url, rate=100)).start()
        threading.Event().wait(0.5)
        summary = gen.stop()
    assert not gen.running
    assert summary.sent > 0


def test_one_request_per_connection_when_asked(port_block: PortBlock) -> None:
    """kube-proxy picks a pod per *connection*: with ``requests_per_connection=1`` every request
    gets its own (its own balancing decision); by default connections are kept alive and reused."""
    with TinyServer(port_block.port()) as kept, TinyServer(port_block.port()) as fresh:
        a = LoadGenerator(LoadSpec(kept.url, rate=100, duration_s=1.0)).start()
        b = LoadGenerator(LoadSpec(fresh.url, rate=100, duration_s=1.0, requests_per_connection=1)).start()
        sa, sb = a.wait(30), b.wait(30)
    assert sa.failed == 0 and sb.failed == 0
    assert fresh.connections == fresh.served == sb.sent
    assert kept.connections <= 10 < kept.served


@pytest.mark.parametrize(("field", "kwargs"), [
    ("url", {"url": "127.0.0.1:80"}),
    ("requests_per_connection", {"requests_per_connection": 0}),
    ("rate", {"rate": 0}),
    ("rate", {"rate": -5}),
    ("max_in_flight", {"max_in_flight": 0}),
    ("path", {"path": "v1"}),
    ("duration_s", {"duration_s": 0}),
])
def test_bad_spec_names_the_field(field: str, kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"url": "http://127.0.0.1:1"}
    base.update(kwargs)
    with pytest.raises(ParameterError) as err:
        LoadGenerator(LoadSpec(**base))  # type: ignore[arg-type]
    assert err.value.name == field
