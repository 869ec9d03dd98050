"""Open-loop HTTP load generator: requests are scheduled by the clock, not by responses.

Why open loop: a closed-loop client (send, wait, send) slows down when the server slows
down, so a slow release would receive *fewer* requests and its latency would look better
than it is (coordinated omission). Here request ``k`` is due at ``t0 + k / rate`` whatever
happened before; when the number of requests in flight reaches ``max_in_flight`` the request
is *dropped and counted* rather than delayed, and a request sent later than
``late_after_s`` after its due time is counted as *late*. Both numbers are reported next to
the achieved rate, so the generator can never silently lower the load.

Why a hand-written HTTP/1.1 client on asyncio streams: at 500 requests/s on a shared 2-core
machine the client's own CPU cost matters; persistent keep-alive connections over raw
streams cost a fraction of a general-purpose client per request (see
``benchmarks/loadgen.py`` for the measured overhead against a direct loopback baseline).
The generator runs its event loop in a dedicated thread so the drill engine can move
traffic weights while load flows.

One :class:`RequestRecord` per scheduled request: due time, send time, completion time,
HTTP status (0 = connection error, -1 = dropped), and the version that served it (the
``X-Clinops-Version`` response header).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..catalog import percentile
from ..exceptions import DrillError, ParameterError

__all__ = [
    "LoadGenerator",
    "LoadSpec",
    "LoadSummary",
    "RequestRecord",
    "default_payloads",
    "summarize",
]

STATUS_CONNECTION_ERROR = 0
STATUS_DROPPED = -1
VERSION_HEADER = b"x-clinops-version"


@dataclass(slots=True)
class RequestRecord:
    """What happened to one scheduled request (times are epoch seconds)."""

    seq: int
    label: str
    scheduled: float
    sent: float
    done: float
    status: int
    version: str
    error: str = ""

    @property
    def latency_s(self) -> float:
        """Time from sending to the complete response."""
        return self.done - self.sent

    @property
    def latency_from_schedule_s(self) -> float:
        """Time from the due time to the complete response (includes client lateness)."""
        return self.done - self.scheduled

    @property
    def ok(self) -> bool:
        return 0 < self.status < 500

    @property
    def failed(self) -> bool:
        """A request that reached no answer or a server error (dropped ones are not failures)."""
        return self.status == STATUS_CONNECTION_ERROR or self.status >= 500

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "label": self.label, "scheduled": self.scheduled, "sent": self.sent,
                "done": self.done, "status": self.status, "version": self.version,
                "latency_s": self.latency_s, "error": self.error}


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where, and how fast.

    ``url`` is the base URL (``http://127.0.0.1:25010``); ``path`` the request path.
    ``duration_s`` of ``None`` runs until :meth:`LoadGenerator.stop`.
    """

    url: str
    path: str = "/v1/observations"
    rate: float = 200.0
    duration_s: float | None = None
    max_in_flight: int = 256
    timeout_s: float = 5.0
    late_after_s: float = 0.05
    method: str = "POST"
    label: str = "user"
    payloads: Sequence[bytes] = field(default_factory=tuple)
    seed: int = 0
    #: requests sent on one connection before it is closed (None: keep it as long as the server
    #: does). A traffic layer that balances per *connection* (kube-proxy in front of a basic
    #: canary) gives each pod its replica share only over many connections: 1 = a new connection,
    #: so a new balancing decision, for every request.
    requests_per_connection: int | None = None

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the bad field (before anything is sent)."""
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ParameterError("url", f"{self.url!r} must look like http://host:port")
        if not self.path.startswith("/"):
            raise ParameterError("path", f"{self.path!r} must start with '/'")
        if not (isinstance(self.rate, int | float) and 0 < self.rate <= 20000 and math.isfinite(self.rate)):
            raise ParameterError("rate", f"{self.rate!r} must be a number of requests/s in (0, 20000]")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ParameterError("duration_s", f"{self.duration_s!r} must be > 0 or None")
        if not 1 <= self.max_in_flight <= 10000:
            raise ParameterError("max_in_flight", f"{self.max_in_flight!r} must be in 1..10000")
        if not self.timeout_s > 0:
            raise ParameterError("timeout_s", f"{self.timeout_s!r} must be > 0")
        if self.method not in ("GET", "POST"):
            raise ParameterError("method", f"{self.method!r} must be GET or POST")
        if self.requests_per_connection is not None and not (
                isinstance(self.requests_per_connection, int) and self.requests_per_connection >= 1):
            raise ParameterError("requests_per_connection",
                                 f"{self.requests_per_connection!r} must be an integer >= 1 or None")


@dataclass(frozen=True)
class LoadSummary:
    """Achieved versus requested load, with the generator's own shortfalls counted."""

    label: str
    requested_rate: float
    achieved_rate: float
    scheduled: int
    sent: int
    completed: int
    failed: int
    dropped: int
    late: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    duration_s: float

    @property
    def rate_shortfall(self) -> float:
        """Relative gap between requested and achieved rate (0.01 = 1 % short)."""
        return 1 - self.achieved_rate / self.requested_rate if self.requested_rate else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rate_shortfall"] = self.rate_shortfall
        return d


def summarize(records: Sequence[RequestRecord], requested_rate: float, label: str = "",
              late_after_s: float = 0.05) -> LoadSummary:
    """Summarize records: achieved rate counts requests actually *sent* per second of schedule."""
    if not records:
        return LoadSummary(label, requested_rate, 0.0, 0, 0, 0, 0, 0, 0, None, None, None, 0.0)
    sent = [r for r in records if r.status != STATUS_DROPPED]
    first = min(r.scheduled for r in records)
    last_sched = max(r.scheduled for r in records)
    # the schedule spans n slots of 1/rate each; the first slot starts at `first`
    span = (last_sched - first) + 1.0 / requested_rate
    achieved = 0.0
    if sent:
        last_send = max(r.sent for r in sent)
        span_sent = max(span, last_send - first)
        achieved = len(sent) / span_sent if span_sent > 0 else 0.0
    lat = sorted(r.latency_s for r in sent if r.status > 0)
    late = sum(1 for r in sent if r.sent - r.scheduled > late_after_s)
    return LoadSummary(
        label=label, requested_rate=requested_rate, achieved_rate=achieved, scheduled=len(records),
        sent=len(sent), completed=sum(1 for r in sent if r.status > 0),
        failed=sum(1 for r in sent if r.failed), dropped=len(records) - len(sent), late=late,
        p50_s=percentile(lat, 0.5), p95_s=percentile(lat, 0.95), p99_s=percentile(lat, 0.99),
        duration_s=span,
    )


def default_payloads(path: str, count: int = 256, seed: int = 0) -> list[bytes]:
    """Pre-rendered realistic request bodies for ``path``.

    Bodies come from :mod:`clinops_lib.services.synthetic` (the same generator the services'
    tests use) and are rendered once, so JSON encoding never competes with sending.
    """
    from ..services import synthetic  # imported lazily: the services package is optional here

    rng = random.Random(seed)
    factory = synthetic.prediction_payload if "predict" in path else synthetic.observation_payload
    return [json.dumps(factory(rng)).encode() for _ in range(count)]


class _HTTPError(Exception):
    pass


class _Conn:
    __slots__ = ("reader", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = 0  # requests answered on this connection

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, str, bool]:
    """Read one HTTP/1.1 response; return (status, version header, keep-alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError) as e:
        raise _HTTPError(f"bad status line {lines[0][:80]!r}") from e
    length = -1
    chunked = False
    keep_alive = True
    version = ""
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == VERSION_HEADER:
            version = value.decode("latin-1")
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.lower() == b"close":
            keep_alive = False
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length >= 0:
        if length:
            await reader.readexactly(length)
    else:  # no length: body runs to the end of the connection
        await reader.read()
        keep_alive = False
    return status, version, keep_alive


class LoadGenerator:
    """Sends ``spec.rate`` requests/s open-loop from its own thread until stopped.

    Usage::

        gen = LoadGenerator(LoadSpec(url, rate=200)).start()
        ...                      # move weights; read gen.records_since(i) as load flows
        summary = gen.stop()
    """

    def __init__(self, spec: LoadSpec) -> None:
        spec.validate()
        self.spec = spec
        parts = urlsplit(spec.url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = int(parts.port or 80)
        self._payloads = list(spec.payloads) or [b""]
        self._records: list[RequestRecord] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._in_flight = 0
        self._due_in_flight: dict[int, float] = {}  # seq -> due time of every request sent, not answered
        self._due_lock = threading.Lock()
        self._idle: list[_Conn] = []
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    # -- public API ------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        """Start sending in a dedicated thread; returns self."""
        if self._thread is not None:
            raise DrillError("load generator already started")
        self._thread = threading.Thread(target=self._run_thread, name=f"loadgen-{self.spec.label}",
                                        daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def records(self) -> list[RequestRecord]:
        """A snapshot of all records so far (completed and dropped requests only)."""
        return self._records[:]

    def settled_before(self, t: float) -> bool:
        """Whether every request due before ``t`` (epoch seconds) has its record: none still in flight.

        Why: an analysis interval judged on the requests that happened to complete by its end
        drops exactly the slow ones; the drill waits for this before judging an interval.
        """
        with self._due_lock:
            return all(due >= t for due in self._due_in_flight.values())

    def records_since(self, index: int) -> list[RequestRecord]:
        """Records appended after position ``index`` (for incremental readers)."""
        return self._records[index:]

    def __len__(self) -> int:
        return len(self._records)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> LoadSummary:
        """Wait for a fixed-duration run to finish."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.summary()

    def stop(self) -> LoadSummary:
        """Stop scheduling, let requests in flight finish (up to their timeout), return the summary."""
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)
        if self._thread is not None:
            self._thread.join(self.spec.timeout_s + 10)
        if self._error is not None:
            raise DrillError(f"load generator {self.spec.label!r} failed: {self._error}") from self._error
        return self.summary()

    def summary(self) -> LoadSummary:
        return summarize(self._records, self.spec.rate, self.spec.label, self.spec.late_after_s)

    # -- the event loop ------------------------------------------------------------------
    def _run_thread(self) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without it
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self._error = e
        finally:
            self._started.set()
            for conn in self._idle:
                conn.close()
            self._idle.clear()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        spec = self.spec
        self._stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        interval = 1.0 / spec.rate
        clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
        t0 = clock() + 0.001
        wall_offset = time.time() - clock()
        self.started_at = t0 + wall_offset
        self._started.set()
        tasks: set[asyncio.Task[None]] = set()
        k = 0
        stop_wait = asyncio.ensure_future(self._stop_event.wait())
        try:
            while not self._stop_event.is_set():
                now = clock()
                while t0 + k * interval <= now:
                    offset = k * interval
                    if spec.duration_s is not None and offset >= spec.duration_s:
                        self._stop_event.set()
                        break
                    sched = t0 + offset + wall_offset
                    if self._in_flight >= spec.max_in_flight:
                        self._records.append(RequestRecord(
                            k, spec.label, sched, sched, sched, STATUS_DROPPED, "",
                            f"dropped: {self._in_flight} requests in flight (max_in_flight)"))
                    else:
                        self._in_flight += 1
                        with self._due_lock:
                            self._due_in_flight[k] = sched
                        task = loop.create_task(self._one(k, sched, wall_offset))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    k += 1
                delay = t0 + k * interval - clock()
                if delay > 0:
                    await asyncio.wait([stop_wait], timeout=delay)
        finally:
            stop_wait.cancel()
            self.stopped_at = time.time()
            if tasks:
                await asyncio.wait(tasks, timeout=spec.timeout_s + 1)

    async def _one(self, seq: int, sched: float, wall_offset: float) -> None:
        spec = self.spec
        clock = time.perf_counter
        body = self._payloads[seq % len(self._payloads)]
        head = (f"{spec.method} {spec.path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"X-Clinops-Request: {spec.label}-{seq}\r\n\r\n").encode()
        sent = clock() + wall_offset
        status, version, error = STATUS_CONNECTION_ERROR, "", ""
        try:
            async with asyncio.timeout(spec.timeout_s):
                for attempt in (0, 1):
                    reused = bool(self._idle)
                    conn = self._idle.pop() if reused else None
                    try:
                        if conn is None:
                            reader, writer = await asyncio.open_connection(self._host, self._port)
                            conn = _Conn(reader, writer)
                        conn.writer.write(head + body)
                        status, version, keep_alive = await _read_response(conn.reader)
                    except (OSError, asyncio.IncompleteReadError) as e:
                        if conn is not None:
                            conn.close()
                        # a kept-alive connection the server closed while idle: retry once, fresh
                        if reused and attempt == 0 and (
                                not isinstance(e, asyncio.IncompleteReadError) or not e.partial):
                            continue
                        raise
                    except BaseException:
                        if conn is not None:
                            conn.close()
                        raise
                    conn.used += 1
                    limit = spec.requests_per_connection
                    if keep_alive and (limit is None or conn.used < limit):
                        self._idle.append(conn)
                    else:
                        conn.close()
                    break
        except TimeoutError:
            status, error = STATUS_CONNECTION_ERROR, f"timeout after {spec.timeout_s}s"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _HTTPError, ValueError) as e:
            status, error = STATUS_CONNECTION_ERROR, f"{type(e).__name__}: {e}"[:200]
        finally:
            self._in_flight -= 1
        done = clock() + wall_offset
        self._records.append(RequestRecord(seq, spec.label, sched, sent, done, status, version, error))
        with self._due_lock:  # after the record exists: settled_before never sees neither
            self._due_in_flight.pop(seq, None)
