"""What every platform service shares: configuration, JSON logs, metrics, faults, error shape.

Why in one place: the local target, the Helm charts and the drills rely on all services
behaving identically at the edges — the same environment variables, the same
``X-Clinops-Version`` header, the same metric names (the canary analysis PromQL reads
``http_requests_total`` and ``http_request_duration_seconds_bucket``), the same 422 body and
the same fault semantics. A service module only adds its business routes.

The request pipeline (:class:`ServiceMiddleware`, outermost, plain ASGI for speed)::

    request -> [business path? apply fault: crash gate, latency, injected 500]
            -> app -> response + X-Clinops-Version -> metrics + one JSON log line

The request metrics count what users asked for, not the platform's own probes and scrapes
(``OPS_PATHS``: liveness, readiness, ``/metrics``, the OpenAPI document). A load balancer's
health check every half second is as many requests as a light user load; counted, it diluted
every ratio read from these metrics (the canary alert's error ratio, the AnalysisTemplates'
success rate and p95): on one aborted drill's canary 3 of 104 user requests failed (2.9 %, over
the alert's 2 %) but Prometheus counted 3 of 171 (1.75 %), and the alert never fired. Whether a
probe answers is Prometheus' ``up`` and the prober's business.

Unhandled exceptions are turned into a 500 here so even those carry the version header and
are counted; the log line names the exception type only (a message might echo PHI).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..catalog import VERSION_RULE
from ..exceptions import ConfigError
from ..faults import FaultProfile

__all__ = [
    "DURATION_BUCKETS",
    "ERROR_RESPONSES",
    "OPENAPI_PATH",
    "OPS_PATHS",
    "ErrorMessage",
    "FaultInjector",
    "FieldError",
    "FieldProblem",
    "InvalidRequest",
    "JsonLog",
    "Readiness",
    "ServiceConfig",
    "ServiceMetrics",
    "ServiceMiddleware",
    "ServiceRuntime",
    "aws_client",
    "build_app",
    "diastolic_below_systolic",
    "field_error_response",
]

def diastolic_below_systolic(cls: type, value: float, info: Any) -> float:
    """Pydantic field validator both services' vitals share (``info`` is a ValidationInfo):
    a diastolic pressure at or above the systolic one is a data-entry error, not a patient."""
    systolic = info.data.get("systolic_bp")
    if systolic is not None and value >= systolic:
        raise ValueError("diastolic_bp must be lower than systolic_bp")
    return value


#: Where each service publishes its OpenAPI document (the contract clients and schemathesis read).
OPENAPI_PATH = "/openapi.json"

#: Paths that faults never touch: probes, scrapes and the API document must keep telling the truth
#: about a bad release.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", OPENAPI_PATH})

#: Fine around the SLO range (p95 between ~5 ms and 1 s) so histogram_quantile is not coarse there.
DURATION_BUCKETS = (
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.6,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
)

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
CRASH_EXIT_CODE = 70

Readiness = Callable[[], Awaitable[dict[str, str]]]
"""Returns one entry per dependency: ``"ok"`` or a short reason (never a secret or a DSN)."""


@dataclass(frozen=True)
class ServiceConfig:
    """The environment of one service process, read once at start (contract: docs/CONTRACTS.md).

    DSNs and URLs may embed passwords, so they are kept out of ``repr`` and never logged.
    """

    service_name: str
    version: str = "dev"
    fault: FaultProfile = field(default_factory=FaultProfile)
    fault_seed: int | None = None
    pg_dsn: str = field(default="", repr=False)
    redis_url: str = field(default="", repr=False)
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    events_topic_arn: str = ""
    model_bucket: str = ""
    model_key: str = ""
    kafka_bootstrap: str = ""
    kafka_topic: str = ""
    mlflow_url: str = ""
    feast_url: str = ""
    registered_model: str = ""
    model_alias: str = ""
    log_requests: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.service_name):
            raise ConfigError(f"CLINOPS_SERVICE_NAME={self.service_name!r}: expected a DNS-style name")
        if not VERSION_RULE.match(self.version):
            raise ConfigError(
                f"CLINOPS_SERVICE_VERSION={self.version!r}: expected 1-64 characters of A-Z a-z 0-9 . _ -"
            )

    @classmethod
    def from_env(cls, default_name: str, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        """Read the service contract's variables; a bad value raises before anything starts."""
        env = os.environ if environ is None else environ
        seed_text = env.get("CLINOPS_FAULT_SEED", "").strip()
        try:
            seed = int(seed_text) if seed_text else None
        except ValueError as e:
            raise ConfigError(f"CLINOPS_FAULT_SEED={seed_text!r} is not an integer") from e
        return cls(
            service_name=env.get("CLINOPS_SERVICE_NAME", "").strip() or default_name,
            version=env.get("CLINOPS_SERVICE_VERSION", "").strip() or "dev",
            fault=FaultProfile.parse(env.get("CLINOPS_FAULT"), parameter="CLINOPS_FAULT"),
            fault_seed=seed,
            pg_dsn=env.get("CLINOPS_PG_DSN", ""),
            redis_url=env.get("CLINOPS_REDIS_URL", ""),
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            aws_region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
            events_topic_arn=env.get("CLINOPS_EVENTS_TOPIC_ARN", ""),
            model_bucket=env.get("CLINOPS_MODEL_BUCKET", ""),
            model_key=env.get("CLINOPS_MODEL_KEY", ""),
            kafka_bootstrap=env.get("CLINOPS_KAFKA_BOOTSTRAP", ""),
            kafka_topic=env.get("CLINOPS_KAFKA_TOPIC", ""),
            mlflow_url=env.get("CLINOPS_MLFLOW_URL", ""),
            feast_url=env.get("CLINOPS_FEAST_URL", ""),
            registered_model=env.get("CLINOPS_REGISTERED_MODEL", ""),
            model_alias=env.get("CLINOPS_MODEL_ALIAS", ""),
            log_requests=env.get("CLINOPS_LOG_REQUESTS", "1").strip().lower() not in ("0", "false", "no"),
        )


class JsonLog:
    """One JSON object per line on stdout: what container runtimes and the local supervisor collect.

    Callers pass only operational fields (ids of rows, counts, durations, exception *types*);
    request bodies are clinical data and are never handed to the log.
    """

    def __init__(self, service: str, version: str, stream: TextIO | None = None) -> None:
        self.service = service
        self.version = version
        self._stream = stream

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "service": self.service,
            "version": self.version,
            "event": event,
            **fields,
        }
        stream = self._stream or sys.stdout
        stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        stream.flush()


class ServiceMetrics:
    """The contract metrics on a private registry (several apps can live in one test process)."""

    def __init__(self, service: str, version: str) -> None:
        self.service = service
        self.version = version
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests",
            "HTTP requests served, by status code and route",
            ["service", "version", "code", "path"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from request to the end of the response, by route",
            ["service", "version", "path"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.faults = Counter(
            "clinops_injected_faults",
            "Faults injected on purpose (CLINOPS_FAULT), by kind",
            ["service", "version", "kind"],
            registry=self.registry,
        )
        info = Gauge(
            "clinops_service_info",
            "Always 1; labels say what runs",
            ["service", "version", "fault"],
            registry=self.registry,
        )
        info.labels(service, version, "none").set(1)
        self._info = info

    def set_fault(self, fault: FaultProfile) -> None:
        self._info.clear()
        self._info.labels(self.service, self.version, str(fault)).set(1)

    def counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
        """A service-specific counter with the ``service``/``version`` labels first."""
        return Counter(name, doc, ["service", "version", *labels], registry=self.registry)

    def gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(name, doc, ["service", "version"], registry=self.registry)

    def observe(self, path: str, code: int, seconds: float) -> None:
        """Count one request to ``path`` (a route label); the ops paths are not counted (module doc)."""
        if path in OPS_PATHS:
            return
        self.requests.labels(self.service, self.version, str(code), path).inc()
        self.duration.labels(self.service, self.version, path).observe(seconds)


class FaultInjector:
    """Applies a :class:`FaultProfile` to business requests, reproducibly when seeded.

    Every process draws from its own seed: ``CLINOPS_FAULT_SEED`` when set (to replay a run),
    otherwise fresh entropy, logged at start (``fault.seed``) so a run can still be replayed.
    Two drills therefore never share error positions. Ramps and flaps count from the first
    business request (``clock`` is injectable for tests).

    ``crash:after=N``: the N-th business request is answered, then the process exits with a
    log line; requests beyond N are never answered (a crashed process answers nothing).
    """

    def __init__(
        self,
        profile: FaultProfile,
        seed: int | None,
        log: JsonLog,
        metrics: ServiceMetrics,
        exit_process: Callable[[int], None] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.seed = seed if seed is not None else secrets.randbits(63)
        self._rng = random.Random(self.seed)
        self._log = log
        self._metrics = metrics
        self._exit = exit_process
        self._clock = clock
        self._first: float | None = None
        self.started = 0
        self.crashing = False
        if not profile.is_none:
            log.event("fault.seed", fault=str(profile), seed=self.seed)

    async def before(self, path: str = "") -> bool:
        """Gate, delay; True when this request must be answered with an injected 500."""
        p = self.profile
        if p.is_none:
            return False
        self.started += 1
        if self.crashing or (p.crash_after is not None and self.started > p.crash_after):
            await asyncio.Event().wait()  # never answered: the process is about to exit
        now = self._clock()
        if self._first is None:
            self._first = now
        elapsed = now - self._first
        m = self._metrics
        # draw both numbers for every request so one fault's draws never shift the other's
        u_latency, u_error = self._rng.random(), self._rng.random()
        delay = p.latency_for(path, elapsed, u_latency)
        if delay:
            m.faults.labels(m.service, m.version, "latency").inc()
            await asyncio.sleep(delay)
        if u_error < p.error_probability(path, elapsed):
            m.faults.labels(m.service, m.version, "error").inc()
            return True
        return False

    def after(self) -> None:
        """Called when a business response is complete; starts the crash at the N-th."""
        n = self.profile.crash_after
        if n is None or self.crashing or self.started < n:
            return
        self.crashing = True
        self._log.event(
            "fault.crash",
            level="error",
            after_requests=n,
            exit_code=CRASH_EXIT_CODE,
            message=f"CLINOPS_FAULT crash:after={n} reached; exiting",
        )
        # A short delay lets the N-th response leave the socket buffer before the exit.
        asyncio.get_running_loop().call_later(0.1, self._die)

    def _die(self) -> None:
        sys.stdout.flush()
        self._exit(CRASH_EXIT_CODE)


@dataclass
class ServiceRuntime:
    """The per-process pieces a service's routes and middleware share."""

    config: ServiceConfig
    log: JsonLog
    metrics: ServiceMetrics
    faults: FaultInjector
    business_paths: frozenset[str]

    @classmethod
    def create(
        cls,
        config: ServiceConfig,
        business_paths: Iterable[str],
        *,
        log_stream: TextIO | None = None,
        exit_process: Callable[[int], None] = os._exit,
    ) -> ServiceRuntime:
        log = JsonLog(config.service_name, config.version, log_stream)
        metrics = ServiceMetrics(config.service_name, config.version)
        metrics.set_fault(config.fault)
        faults = FaultInjector(config.fault, config.fault_seed, log, metrics, exit_process)
        return cls(config, log, metrics, faults, frozenset(business_paths))

    @property
    def known_paths(self) -> frozenset[str]:
        return self.business_paths | OPS_PATHS


class FieldError(Exception):
    """A request is well-formed but a field's value is not acceptable (e.g. an unknown site)."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        self.message = message
        super().__init__(f"{field_name}: {message}")


class FieldProblem(BaseModel):
    """One rejected field: its dotted name (``body`` for the body as a whole), why, pydantic's type."""

    field: str
    message: str
    type: str


class InvalidRequest(BaseModel):
    """The one 422 body (documented in every service's OpenAPI document)."""

    error: str
    fields: list[str]
    errors: list[FieldProblem]


class ErrorMessage(BaseModel):
    """Body of a 5xx answer: what is wrong, never a traceback (``fault`` on an injected 500)."""

    error: str
    fault: str | None = None


#: The answers every business route may give besides its success (``responses=`` of the route).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": InvalidRequest, "description": "The body or a field is not acceptable; names them all"},
    500: {"model": ErrorMessage, "description": "An injected fault (CLINOPS_FAULT) or an unexpected error"},
    503: {"model": ErrorMessage, "description": "A dependency is not available (the service is not ready)"},
}


def field_error_response(errors: list[dict[str, str]]) -> JSONResponse:
    """The one 422 body: ``error`` names every bad field; input values are never echoed (PHI)."""
    fields = list(dict.fromkeys(e["field"] for e in errors))
    return JSONResponse(
        status_code=422,
        content={
            "error": f"invalid request: bad field(s) {', '.join(fields)}",
            "fields": fields,
            "errors": errors,
        },
    )


async def _validation_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        kind = str(err.get("type", "value_error"))
        # A JSON syntax error's location is ("body", <character offset>): the offset is not a field.
        loc = [] if kind == "json_invalid" else [str(p) for p in err.get("loc", ()) if p != "body"]
        errors.append(
            {
                "field": ".".join(loc) or "body",
                "message": str(err.get("msg", "invalid")),
                "type": kind,
            }
        )
    return field_error_response(errors)


async def _http_error_handler(_request: Request, exc: Exception) -> Response:
    """Starlette's own errors in the services' shape: ``{"error": ...}``.

    FastAPI answers 400 "There was an error parsing the body" when the body cannot be decoded
    at all (not UTF-8, an integer beyond Python's digit limit): for a client that is the same
    mistake as malformed JSON, so it gets the same documented 422 naming ``body``.
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        return field_error_response(
            [{"field": "body", "message": "body could not be decoded as JSON", "type": "json_invalid"}]
        )
    return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers)


async def _field_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FieldError)
    return field_error_response([{"field": exc.field, "message": exc.message, "type": "value_error"}])


class ServiceMiddleware:
    """Version header, fault injection, metrics and the request log line, as plain ASGI."""

    def __init__(self, app: Callable[..., Awaitable[None]], runtime: ServiceRuntime) -> None:
        self.app = app
        self.rt = runtime
        self._header = (b"x-clinops-version", runtime.config.version.encode())

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rt = self.rt
        path: str = scope["path"]
        label = path if path in rt.known_paths else "other"
        business = path in rt.business_paths
        start = time.perf_counter()
        status = 0

        async def send_with_header(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), self._header]
            await send(message)

        error: str | None = None
        try:
            if business and await rt.faults.before(path):
                await _send_json(
                    send_with_header, 500, {"error": "injected fault", "fault": str(rt.config.fault)}
                )
            else:
                await self.app(scope, receive, send_with_header)
        except Exception as e:  # noqa: BLE001 - the last line of defence: answer, count, log the type
            error = type(e).__name__
            if status == 0:
                await _send_json(send_with_header, 500, {"error": "internal error"})
        finally:
            elapsed = time.perf_counter() - start
            rt.metrics.observe(label, status or 500, elapsed)
            if rt.config.log_requests and (label not in OPS_PATHS or status >= 500):
                fields: dict[str, Any] = {
                    "method": scope.get("method"),
                    "path": label,
                    "code": status or 500,
                    "ms": round(elapsed * 1000, 2),
                }
                if error:
                    fields["exception"] = error
                rt.log.event("request", level="error" if (status or 500) >= 500 else "info", **fields)
            if business:
                rt.faults.after()


async def _send_json(send: Callable[..., Awaitable[None]], status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Liveness(BaseModel):
    status: str
    service: str
    version: str


class ReadinessReport(BaseModel):
    ready: bool
    checks: dict[str, str]
    version: str


def build_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    readiness: Readiness,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> FastAPI:
    """A FastAPI app with the ops endpoints, the 422 shape and :class:`ServiceMiddleware`.

    The service module adds its business routes (whose paths must be ``runtime.business_paths``).
    """
    app = FastAPI(
        title=title,
        version=runtime.config.version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_PATH,
    )
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(FieldError, _field_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)

    @app.get("/healthz", response_model=Liveness)
    async def healthz() -> dict[str, str]:
        """Liveness: the event loop answers. Dependencies are /readyz's business."""
        return {"status": "ok", "service": runtime.config.service_name, "version": runtime.config.version}

    @app.get(
        "/readyz",
        response_model=ReadinessReport,
        responses={503: {"model": ReadinessReport, "description": "Not ready; checks name the reasons"}},
    )
    async def readyz() -> Response:
        """Readiness: 200 only when every dependency answers now; 503 names the ones that do not."""
        checks = await readiness()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"ready": ready, "checks": checks, "version": runtime.config.version},
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        """The contract metrics in Prometheus' text format."""
        return PlainTextResponse(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(ServiceMiddleware, runtime=runtime)  # type: ignore[arg-type]
    return app


def aws_client(service: str, config: ServiceConfig) -> Any:
    """A boto3 client with short timeouts: a slow LocalStack/AWS must not pin a worker for minutes."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=config.aws_endpoint_url,
        region_name=config.aws_region,
        config=BotoConfig(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}),
    )
