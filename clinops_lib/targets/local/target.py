"""The ``local`` target: real components as supervised processes behind HAProxy.

PostgreSQL, Redis, LocalStack, HAProxy (Level 0), clinical-gateway (Level 1), the training
job and model-serving (Level 4) and Prometheus (Level 6) run as detached processes on
loopback ports from one :class:`~clinops_lib.config.PortMap`. Everything the target knows
(pids, versions, weights, timings) is a typed :class:`~.state.LocalState` kept in
``<state_dir>/local-target.json`` (versioned, written atomically under a lock: :mod:`.state`) so
``clinops status``/``down`` in another process see the same platform. Traffic between a service's
``stable`` and ``canary`` tracks is split by HAProxy server weights set at run time through
its admin socket; percent is used directly as HAProxy weight.

Opt-in components (the catalog's ``Component.opt_in``: Level 1's Debezium on Kafka Connect,
:mod:`.kafka_connect`) start only when the ``up`` asks for them (every level, or named); once
started they are part of this platform, so a later partial ``up`` restarts one that died.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import httpx

from ...catalog import LEVELS
from ...catalog import component as catalog_component
from ...config import Settings, child_environment
from ...exceptions import (
    ClinopsError,
    ComponentError,
    MetricsError,
    PortInUseError,
    PrerequisiteError,
    TargetError,
    TrafficError,
    WaitTimeout,
)
from ...faults import FaultProfile
from ..base import TRACKS, ComponentStatus, Progress, Target, Track, TrackState
from . import supervisor as sup
from .components import (
    AWS_ENV,
    PIPELINE_COMPONENTS,
    SERVICES,
    Component,
    HAProxy,
    LocalStack,
    PostgreSQL,
    Prometheus,
    Redis,
    Services,
    http_ok,
    python_bin,
    python_env,
    service_env,
    service_spec,
)
from .haproxy import AdminSocket, read_stats_page
from .kafka_connect import DebeziumConnect
from .state import (
    STATE_FILE,
    ComponentRecord,
    JobRecord,
    LocalState,
    PipelineRunRecord,
    ProcessRecord,
    StateStore,
    TrackRecord,
    TrainingRecord,
    Weights,
    make_record,
)

__all__ = ["LocalTarget"]

_LOG = logging.getLogger(__name__)

INFRA: dict[str, type[Component]] = {
    "postgresql": PostgreSQL,
    "redis": Redis,
    "localstack": LocalStack,
    "haproxy": HAProxy,
    "prometheus": Prometheus,
    **PIPELINE_COMPONENTS,  # issue 14: kafka, kafka-consumer, feast, mlflow, airflow, alertmanager
    "debezium-cdc": DebeziumConnect,  # opt-in (catalog): Kafka Connect + Debezium, see kafka_connect.py
}
#: Stop order of ``down``: consumers of a component before it.
STOP_ORDER: tuple[str, ...] = ("airflow", "feast", "mlflow", "debezium-cdc", "kafka-consumer", "kafka",
                               "alertmanager", "prometheus", "haproxy", "localstack", "redis", "postgresql")
#: Workloads whose *process* may start before their level is due, once these components are
#: healthy. The gateway's connection pool and Redis client need PostgreSQL and Redis only, so
#: its imports and start-up overlap LocalStack's boot; its readiness is still awaited after the
#: whole of Level 0. model-serving is not listed: it polls S3 for the model every 2 s, so it
#: starts when the model is there (after the training job), not earlier.
START_AFTER: dict[str, tuple[str, ...]] = {"clinical-gateway": ("postgresql", "redis")}


class LocalTarget(Target):
    """Supervised local processes; see the module docstring.

    ``timeouts`` overrides per-component health timeouts (seconds), ``services`` the workload
    wiring (ASGI apps, bucket, topic) and ``transport`` the httpx transport of Prometheus
    queries, so tests can exercise every path. ``component_options`` are keyword arguments of
    an infrastructure component's constructor (the kubeconfig target on the Debian cluster runs
    ``prometheus`` as the module-built binary with the cluster's pod scrape job).
    """

    name = "local"
    platform = "local"

    @property
    def traffic_mode(self) -> str:
        return "HAProxy: weighted stable/canary backends per service, on loopback"

    def __init__(
        self,
        settings: Settings,
        *,
        timeouts: Mapping[str, float] | None = None,
        services: Services | None = None,
        transport: httpx.BaseTransport | None = None,
        training_module: str = "clinops_lib.services.training",
        component_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(settings)
        self.timeouts = dict(timeouts or {})
        self.component_options = dict(component_options or {})  # values may resolve lazily
        self.services = services or Services.from_inventory(settings)
        self.training_module = training_module
        self._http = httpx.Client(transport=transport, timeout=10.0)
        self._aws_clients: Callable[[], Any] | None = None  # set while `up` prepares them in the background

    # -- state -----------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.settings.state_dir / STATE_FILE

    def state(self) -> LocalState:
        """A snapshot of what the target started (read from the state file, without the lock)."""
        return StateStore(self.settings.state_dir).load()

    def _locked(self) -> contextlib.AbstractContextManager[LocalState]:
        """Load the state under the state dir's exclusive lock, yield it, save it (also on error)."""
        return StateStore(self.settings.state_dir).locked()

    def _component(self, name: str, state: LocalState | None = None) -> Component:
        cls = INFRA[name]
        if cls is HAProxy:
            weights = {k: (w.stable, w.canary) for k, w in (state or self.state()).weights.items()}
            comp: Component = HAProxy(self.settings, weights)
        else:
            comp = cls(self.settings, **self.component_options.get(name, {}))
        if name in self.timeouts:
            comp.timeout = self.timeouts[name]
        return comp

    @staticmethod
    def _alive(entry: ProcessRecord | None) -> bool:
        return entry is not None and entry.alive()

    # -- lifecycle -------------------------------------------------------------------------------
    def _up(self, levels: list[int], progress: Progress, **options: Any) -> bool:
        say, wanted = progress, levels
        opt_in = set(options.get("opt_in") or ())
        started: list[tuple[str, sup.RunningProcess, sup.ProcessSpec]] = []
        with self._locked() as state:
            # an opt-in component this platform already runs (or ran) stays part of it: a partial
            # `up` restarts it when it died instead of leaving it down
            opt_in |= {name for name in state.components if catalog_component(name).opt_in}
            self._preflight(state, wanted, opt_in)
            try:
                changed = self._up_levels(state, wanted, started, say, opt_in)
            except BaseException:
                for name, proc, spec in reversed(started):
                    sup.stop(proc, stop_signal=spec.stop_signal, signal_group=spec.signal_group)
                    state.components.pop(name, None)
                    for svc in state.services.values():
                        for track in TRACKS:
                            entry = svc.track(track)
                            if entry is not None and entry.name == name:
                                svc.set(track, None)
                    spec.pid_file.unlink(missing_ok=True)
                raise
        if not changed:
            say("already up: nothing to do")
        return changed

    def _up_levels(
        self,
        state: LocalState,
        wanted: list[int],
        started: list[tuple[str, sup.RunningProcess, sup.ProcessSpec]],
        say: Progress,
        opt_in: set[str] | frozenset[str] = frozenset(),
    ) -> bool:
        """Start what is missing; True when anything was started (or the model restored/trained).

        Processes start as early as their own needs allow, health is *reported* in level order:

        1. every infrastructure process starts at once (they need nothing but their ports);
        2. health is awaited component by component in level order; a workload in
           :data:`START_AFTER` starts its process (its Python imports) as soon as the components
           it needs at start-up are healthy, e.g. clinical-gateway while LocalStack still boots;
        3. a workload's *readiness* is awaited only after every level before it is healthy,
           so nothing is reported ready on a platform whose lower level is not.

        The waits of independent processes overlap; the order of the verdicts does not change.
        """
        changed = False
        plan = [(lv.number, c.name) for lv in LEVELS if lv.number in wanted
                for c in lv.components if c.runs_on("local") and (not c.opt_in or c.name in opt_in)]
        healthy: set[str] = set()
        infra_waits: dict[str, Callable[[], None]] = {}
        deferred: dict[str, int] = {}  # components whose process waits for its needs to be healthy
        for number, name in plan:
            if name in INFRA:
                if _needs(name) and not self._alive(state.components.get(name)):
                    deferred[name] = number
                    continue
                wait = self._up_infra(state, name, number, started, say)
                if wait is None:
                    healthy.add(name)
                else:
                    infra_waits[name] = wait
                    changed = True
        if "localstack" in infra_waits:
            self._aws_clients = _in_background(self._make_aws_clients)  # boto3 imports off the critical path

        service_waits: list[Callable[[], None]] = []
        launched: set[str] = set()

        def launch(service: str) -> None:
            nonlocal changed
            launched.add(service)
            wait = self._up_service(state, service, started, say)
            if wait is not None:
                service_waits.append(wait)
                changed = True

        def launch_early() -> None:
            nonlocal changed
            for name, number in list(deferred.items()):
                if set(_needs(name)) <= healthy:
                    del deferred[name]
                    wait = self._up_infra(state, name, number, started, say)
                    if wait is None:
                        healthy.add(name)
                    else:
                        infra_waits[name] = wait
                        changed = True
            for _, name in plan:
                needs = START_AFTER.get(name)
                if needs is not None and name not in launched and set(needs) <= healthy:
                    launch(name)

        launch_early()
        for _, name in plan:
            if name in deferred:
                missing = sorted(set(_needs(name)) - healthy)
                comp = self._component(name, state)
                raise ComponentError(
                    name, f"cannot start: needs {', '.join(missing)} healthy (bring its level up too)",
                    str(comp.log_file),
                )
            if name in infra_waits:
                infra_waits.pop(name)()
                healthy.add(name)
                launch_early()
            elif name == "training-job":
                changed |= self._up_training(state, say)
            elif name in DAG_JOBS:
                changed |= self._up_job_runtime(state, name, say)
            elif name in SERVICES and name not in launched:
                launch(name)
        # readiness of the services, side by side, once every level below them is healthy
        for wait in service_waits:
            wait()
        return changed

    def _preflight(self, state: LocalState, wanted: list[int], opt_in: set[str]) -> None:
        """Every port a component *to be started* needs must be free, before anything starts."""
        for level in LEVELS:
            if level.number not in wanted:
                continue
            for comp in level.components:
                if comp.opt_in and comp.name not in opt_in:
                    continue
                if comp.name in INFRA and not self._alive(state.components.get(comp.name)):
                    c = self._component(comp.name, state)
                    ports = c.ports() if hasattr(c, "ports") else [c.port]  # type: ignore[attr-defined]
                    for port in [p for p in ports if p]:
                        if sup.port_in_use(port):
                            raise _port_error(comp.name, port, c.log_file)
                elif comp.name in SERVICES and not self._alive(state.track(comp.name, "stable")):
                    port = self.settings.ports.service_backend(SERVICES.index(comp.name), 0)
                    if sup.port_in_use(port):
                        raise _port_error(
                            comp.name, port, self.settings.state_dir / "logs" / f"{comp.name}-stable.log"
                        )

    def _up_infra(
        self,
        state: LocalState,
        name: str,
        level: int,
        started: list[tuple[str, sup.RunningProcess, sup.ProcessSpec]],
        say: Progress,
    ) -> Callable[[], None] | None:
        """Start one component; return the wait for its health (None when it was already up).

        Starting every independent component of a level first and waiting afterwards lets
        PostgreSQL, Redis, LocalStack and HAProxy come up side by side.
        """
        comp = self._component(name, state)
        entry = state.components.get(name)
        if self._alive(entry) and isinstance(comp, HAProxy) and not comp.admin_path.exists():
            # its admin socket was removed: no weight can change until it is restarted (on the
            # weights of the state, so a canary an abort took out stays out)
            say("haproxy: admin socket missing: restarting it")
            if entry is not None:
                sup.stop(entry.process())
            state.components.pop(name, None)
            entry = None
        if self._alive(entry):
            if isinstance(comp, Prometheus) and not comp.has_rules() and comp.rules_available():
                comp.prepare()  # the shared rule file appeared since Prometheus started
                comp.reload()
                say("prometheus: alert rules loaded (rule file appeared since the last start)")
                return None
            if isinstance(comp, DebeziumConnect) and entry is not None and not comp.healthy():
                # alive but not streaming (PostgreSQL or Kafka was restarted under it): Debezium
                # reconnects by itself within ~10 s; wait for that instead of reporting it unhealthy
                say(f"{name}: running, waiting for it to stream again ({comp.problem()})")
                running = entry.process()

                def wait_stream() -> None:
                    sup.wait_healthy(running, comp.healthy, comp.timeout, "replication stream")
                    say(f"{name}: streaming again")

                return wait_stream
            say(f"{name}: already up")
            return None
        say(f"{name}: starting")
        if isinstance(comp, Prometheus) and not comp.rules_available():
            say("prometheus: WARNING: rule file charts/clinical-mlops/charts/observability/rules/"
                "platform-rules.yaml is missing; starting without alert rules (the next `up` loads it)")
        t0 = time.time()
        try:
            comp.prepare()
        except PrerequisiteError as e:
            if "log:" in str(e):
                raise
            raise PrerequisiteError(f"{e} (log: {comp.log_file})") from e
        spec = comp.spec()
        proc = sup.start(spec)
        started.append((name, proc, spec))
        record = state.components[name] = make_record(ComponentRecord, proc, level=level, started_at=t0)

        def wait() -> None:
            sup.wait_healthy(proc, comp.healthy, comp.timeout, f"health check at {comp.endpoint()}",
                             gave_up=getattr(comp, "gave_up", None))
            comp.after_start()
            if name == "localstack":
                self._ensure_aws()
            record.ready_at, record.version, record.endpoint = time.time(), comp.version(), comp.endpoint()
            say(f"{name}: healthy after {record.ready_at - t0:.1f}s")

        return wait

    # -- AWS resources the workloads need --------------------------------------------------------
    def _ensure_aws(self) -> None:
        """Apply the AWS inventory to LocalStack so the model bucket, topic and queues exist.

        LocalStack keeps no resources across restarts (community edition), so a warm start
        applies the whole inventory again; it is a real apply, never skipped.
        """
        from ... import inventory

        inv = inventory.load_inventory(env=self.settings.environment)
        pending, self._aws_clients = self._aws_clients, None
        clients = pending() if pending is not None else self._make_aws_clients()
        inventory.apply_inventory(inv, clients)

    def _make_aws_clients(self) -> Any:
        from ... import inventory

        return inventory.make_clients(self.settings)

    def _boto(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.settings.localstack_url,
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    # -- Level 4 training job --------------------------------------------------------------------
    def _model_present(self) -> bool:
        try:
            self._boto("s3").head_object(Bucket=self.services.model_bucket, Key=self.services.model_key)
            return True
        except Exception:  # noqa: BLE001 - missing bucket/key or LocalStack restarting
            return False

    def _up_training(self, state: LocalState, say: Progress) -> bool:
        if state.training is not None and state.training.exit == 0:
            if self._model_present():
                say("training-job: model already trained")
                return False
            if self._restore_model():
                say("training-job: trained model restored from the state dir into S3 (warm start)")
                return True
        say("training-job: running")
        log = self.settings.state_dir / "logs" / "training-job.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        version = self._chart_versions().get("model-serving", "")
        env = {**service_env(self.settings, self.services, "training-job", version, "none"),
               **python_env(self.settings, python_bin(self.settings))}
        timeout = self.timeouts.get("training-job", 300.0)
        t0 = time.time()
        with open(log, "ab") as fh:
            try:
                argv = [
                    python_bin(self.settings),
                    "-m",
                    self.training_module,
                    "--bucket",
                    self.services.model_bucket,
                    "--key",
                    self.services.model_key,
                    "--version",
                    version,
                ]
                rc = subprocess.run(
                    argv,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    env=child_environment(env),
                    cwd=self.settings.project_root,
                ).returncode
            except subprocess.TimeoutExpired as e:
                raise ComponentError("training-job", f"did not finish within {timeout:g}s", str(log)) from e
        state.training = TrainingRecord(exit=rc, started_at=t0, ready_at=time.time(), version=version,
                                        log_file=str(log))
        if rc != 0:
            raise ComponentError("training-job", f"exited with status {rc}", str(log))
        if not self._model_present():
            raise ComponentError(
                "training-job",
                f"finished but s3://{self.services.model_bucket}/{self.services.model_key} does not exist",
                str(log),
            )
        self._cache_model()
        say(f"training-job: model uploaded after {time.time() - t0:.1f}s")
        return True

    @property
    def _model_cache(self) -> Path:
        return self.settings.state_dir / "model-cache"

    def _model_keys(self) -> list[str]:
        from ...services.training import metadata_key

        return [self.services.model_key, metadata_key(self.services.model_key)]

    def _cache_model(self) -> None:
        """Keep the trained artifact + metadata: LocalStack community does not persist S3 across
        restarts, and retraining the same seed would only reproduce the same bytes."""
        s3 = self._boto("s3")
        self._model_cache.mkdir(parents=True, exist_ok=True)
        for i, key in enumerate(self._model_keys()):
            body = s3.get_object(Bucket=self.services.model_bucket, Key=key)["Body"].read()
            (self._model_cache / f"{i}.bin").write_bytes(body)

    def _restore_model(self) -> bool:
        files = [self._model_cache / f"{i}.bin" for i in range(len(self._model_keys()))]
        if not all(f.exists() for f in files):
            return False
        s3 = self._boto("s3")
        for f, key in zip(files, self._model_keys(), strict=True):  # artifact first, metadata last
            s3.put_object(Bucket=self.services.model_bucket, Key=key, Body=f.read_bytes())
        return self._model_present()

    # -- services --------------------------------------------------------------------------------
    def _chart_versions(self) -> dict[str, str]:
        from ...charts import service_versions

        return service_versions(self.settings.environment, self.settings.project_root)

    def _up_service(
        self,
        state: LocalState,
        service: str,
        started: list[tuple[str, sup.RunningProcess, sup.ProcessSpec]],
        say: Progress,
    ) -> Callable[[], None] | None:
        """Start the stable track; return the wait for its readiness (None when already up)."""
        entry = state.track(service, "stable")
        if entry is not None and entry.alive():
            say(f"{service}: already up ({entry.version})")
            return None
        version = entry.version if entry else self._chart_versions()[service]
        fault = entry.fault if entry else "none"
        say(f"{service}: starting {version} on stable")
        timeout = self.timeouts.get(service, 60.0)
        new, wait = self._launch_track(state, service, "stable", version, fault, timeout, started)

        def finish() -> None:
            wait()
            say(f"{service}: ready after {(new.ready_at or new.started_at) - new.started_at:.1f}s")

        return finish

    def _start_track(
        self,
        state: LocalState,
        service: str,
        track: Track,
        version: str,
        fault: str,
        timeout: float,
    ) -> TrackRecord:
        """Start one track and wait for it (deploy, promote); a failed wait stops it again."""
        entry, wait = self._launch_track(state, service, track, version, fault, timeout)
        wait()
        return entry

    def _launch_track(
        self,
        state: LocalState,
        service: str,
        track: Track,
        version: str,
        fault: str,
        timeout: float,
        started: list[tuple[str, sup.RunningProcess, sup.ProcessSpec]] | None = None,
    ) -> tuple[TrackRecord, Callable[[], None]]:
        """Start one track's process; the returned wait checks readiness and HAProxy's view."""
        spec = service_spec(self.settings, self.services, service, track, version, fault)
        t0 = time.time()
        proc = sup.start(spec)
        if started is not None:
            started.append((spec.name, proc, spec))
        entry = make_record(TrackRecord, proc, version=version, fault=fault, started_at=t0,
                            endpoint=f"http://127.0.0.1:{spec.ports[0]}")
        state.service(service).set(track, entry)

        def wait() -> None:
            try:
                self._track_ready(state, service, track, entry, proc, timeout)
            except ClinopsError:
                if started is None:
                    sup.stop(proc)
                    spec.pid_file.unlink(missing_ok=True)
                    state.service(service).set(track, None)
                raise
            entry.ready_at = time.time()

        return entry, wait

    def _track_ready(self, state: LocalState, service: str, track: Track, entry: TrackRecord,
                     proc: sup.RunningProcess, timeout: float) -> None:
        url = f"{entry.endpoint}/readyz"
        sup.wait_healthy(proc, lambda: http_ok(url), timeout, f"readiness at {url}")
        if self._alive(state.components.get("haproxy")):
            adm = self._admin()
            adm.enable_server(service, track)
            if track == "canary":
                adm.enable_server(f"{service}-preview", "canary")
            self._wait_lb(service, track, "UP", timeout)

    def _admin(self) -> AdminSocket:
        return cast(HAProxy, self._component("haproxy")).admin()

    def _wait_lb(self, service: str, track: Track, status: str, timeout: float) -> None:
        """Wait until HAProxy's own health check sees the track's server in ``status``."""
        adm = self._admin()

        def seen() -> bool:
            stat = adm.server_stats(service).get(track)
            return stat is not None and stat.status.startswith(status)

        try:
            sup.wait_for(f"HAProxy to report {service}/{track} {status}", seen, timeout=timeout, interval=0.1)
        except WaitTimeout as e:
            raise TrafficError(str(e)) from e

    def _require_haproxy(self, state: LocalState) -> None:
        if not self._alive(state.components.get("haproxy")):
            raise TargetError("HAProxy is not running on the local target; run `clinops up` first")

    def _stop_track(self, state: LocalState, service: str, track: Track) -> None:
        entry = state.track(service, track)
        if entry is not None:
            sup.stop(entry.process())
        (self.settings.state_dir / "run" / f"{service}-{track}.pid").unlink(missing_ok=True)
        state.service(service).set(track, None)

    def _set_weights(self, state: LocalState, service: str, stable: int, canary: int) -> None:
        adm = self._admin()
        # raise the receiving side first so there is never a moment with both at 0
        order = (
            [("canary", canary), ("stable", stable)]
            if canary > stable
            else [("stable", stable), ("canary", canary)]
        )
        for server, w in order:
            adm.set_weight(service, server, w)
        state.weights[service] = Weights(stable, canary)

    # -- the Target API: services and traffic ------------------------------------------------------
    def _service_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings.ports.service_frontend(SERVICES.index(service))}"

    def _preview_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.settings.ports.service_preview(SERVICES.index(service))}"

    def _deploy(self, service: str, version: str, track: Track, fault: FaultProfile,
                timeout: float) -> TrackState:
        fault_text = str(fault)
        with self._locked() as state:
            self._require_haproxy(state)
            if track == "canary":
                self._set_weights(state, service, 100, 0)
            self._stop_track(state, service, track)
            self._start_track(state, service, track, version, fault_text, timeout)
        return self.tracks(service)[track]

    def _retire(self, service: str, track: Track) -> None:
        with self._locked() as state:
            unreachable: TrafficError | None = None
            if self._alive(state.components.get("haproxy")):
                try:
                    adm = self._admin()
                    if track == "canary":
                        self._set_weights(state, service, 100, 0)
                        adm.disable_server(f"{service}-preview", "canary")
                    else:
                        adm.set_weight(service, "stable", 0)
                    adm.disable_server(service, track)
                except TrafficError as e:
                    unreachable = e
            if unreachable is not None and track == "stable":
                raise unreachable  # stopping stable while HAProxy may still route to it would fail users
            self._stop_track(state, service, track)
            if unreachable is not None:  # the canary: stopped, HAProxy's health check takes it out
                state.weights[service] = Weights(100, 0)
                _LOG.warning("%s; canary of %s stopped anyway (its health check takes it out)", unreachable,
                             service)

    def _set_canary_weight(self, service: str, weight: int) -> None:
        with self._locked() as state:
            self._require_haproxy(state)
            if weight > 0:
                if not self._alive(state.track(service, "canary")):
                    raise TrafficError(
                        f"cannot send {weight}% to {service} canary: no canary is running (deploy one first)"
                    )
                self._admin().enable_server(service, "canary")
            self._set_weights(state, service, 100 - weight, weight)

    def _canary_weight(self, service: str) -> int:
        stats = self._admin().server_stats(service)
        if "canary" not in stats or "stable" not in stats:
            raise TrafficError(f"HAProxy has no stable/canary servers in backend {service!r}")
        canary = stats["canary"].weight if not stats["canary"].status.startswith("MAINT") else 0
        stable = stats["stable"].weight if not stats["stable"].status.startswith("MAINT") else 0
        if canary + stable == 0:
            return 0
        return round(100 * canary / (canary + stable))

    def _promote(self, service: str) -> TrackState:
        """Canary's version becomes stable: canary takes 100 %, stable restarts on the new version,
        takes 100 % back, and the canary track is freed. Users are served throughout."""
        with self._locked() as state:
            self._require_haproxy(state)
            canary = state.track(service, "canary")
            if canary is None or not canary.alive():
                raise TrafficError(f"cannot promote {service}: no canary is running")
            adm = self._admin()
            adm.enable_server(service, "canary")
            self._set_weights(state, service, 0, 100)
            adm.disable_server(service, "stable")
            self._stop_track(state, service, "stable")
            self._start_track(state, service, "stable", canary.version, canary.fault, 60.0)
            self._set_weights(state, service, 100, 0)
            adm.disable_server(service, "canary")
            adm.disable_server(f"{service}-preview", "canary")
            self._stop_track(state, service, "canary")
        return self.tracks(service)["stable"]

    def _abort(self, service: str) -> None:
        with self._locked() as state:
            self._require_haproxy(state)
            try:
                adm = self._admin()
                adm.enable_server(service, "stable")
                self._set_weights(state, service, 100, 0)
                adm.disable_server(service, "canary")
            except TrafficError as e:
                self._abort_without_admin(state, service, e)

    def _abort_without_admin(self, state: LocalState, service: str, cause: TrafficError) -> None:
        """The admin socket is unreachable: stop the canary's process, so HAProxy's own health check
        takes it out of rotation (``fall 2`` x ``inter``) and the retry sends in-flight requests to
        stable; confirmed on the read-only stats page. The weights persisted as 100/0, so the next
        ``clinops up`` restarts HAProxy (it notices the missing socket) with the canary at 0."""
        self._stop_track(state, service, "canary")
        state.weights[service] = Weights(100, 0)
        stats_url = f"{cast(HAProxy, self._component('haproxy', state)).endpoint()}/stats"

        def canary_out() -> bool:
            try:
                stat = {s.server: s for s in read_stats_page(stats_url) if s.backend == service}
            except TrafficError:
                return False
            canary = stat.get("canary")
            return canary is not None and not canary.status.startswith("UP")

        try:
            sup.wait_for(f"HAProxy's health check to take {service}/canary out", canary_out,
                         timeout=10.0, interval=0.1)
        except WaitTimeout as e:
            raise TrafficError(f"{cause}; canary stopped instead, HAProxy did not report it out: {e}") from e
        _LOG.warning("%s; canary of %s stopped instead: HAProxy's health check took it out of rotation "
                     "(`clinops up` restarts HAProxy with a new admin socket)", cause, service)

    def _tracks(self, service: str) -> dict[Track, TrackState]:
        state = self.state()
        out: dict[Track, TrackState] = {}
        for track in TRACKS:
            entry = state.track(service, track)
            port = self.settings.ports.service_backend(SERVICES.index(service), TRACKS.index(track))
            out[track] = TrackState(
                service,
                track,
                entry.version if entry else "",
                self._alive(entry),
                f"http://127.0.0.1:{port}",
                entry.fault if entry else "none",
                {"log_file": entry.log_file} if entry else {},
            )
        return out

    # -- metrics -----------------------------------------------------------------------------------
    def _prometheus_query(self, promql: str) -> Mapping[str, Any]:
        url = f"{self.settings.prometheus_url}/api/v1/query"
        try:
            r = self._http.get(url, params={"query": promql})
            body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise MetricsError(
                f"Prometheus at {self.settings.prometheus_url} unreachable for {promql!r}: {e}"
            ) from e
        if r.status_code != 200 or body.get("status") != "success":
            raise MetricsError(f"query {promql!r} failed (HTTP {r.status_code}): {body.get('error', body)}")
        return cast(Mapping[str, Any], body.get("data") or {})

    def close(self) -> None:
        self._http.close()

    # -- status and down ---------------------------------------------------------------------------
    def _observe(self) -> dict[str, ComponentStatus]:
        """A row for every component this target runs (the base class adds the catalog's others)."""
        state = self.state()
        out: dict[str, ComponentStatus] = {}
        for level in LEVELS:
            for comp in level.components:
                if not comp.runs_on(self.platform):
                    continue
                if comp.name in INFRA:
                    entry = state.components.get(comp.name)
                    out[comp.name] = self._infra_status(level.number, comp.name, entry)
                elif comp.name in SERVICES:
                    out[comp.name] = self._service_status(level.number, comp.name, state)
                elif comp.name in DAG_JOBS:
                    out[comp.name] = self._job_status(level.number, comp.name, state)
                elif comp.name == "training-job":
                    out[comp.name] = self._training_status(level.number, state.training)
        return out

    def _training_status(self, level: int, t: TrainingRecord | None) -> ComponentStatus:
        if t is None:
            return ComponentStatus(level, "training-job", "stopped", detail="not run")
        return ComponentStatus(
            level,
            "training-job",
            "healthy" if t.exit == 0 else "unhealthy",
            version=t.version,
            endpoint=f"s3://{self.services.model_bucket}/{self.services.model_key}",
            started_at=t.started_at,
            ready_at=t.ready_at,
            seconds_to_ready=t.ready_at - t.started_at,
            detail=f"completed, exit status {t.exit}",
            log_file=t.log_file,
        )

    def run_pipeline(self, run_id: str, *, timeout: float = 600.0,
                     progress: Callable[[Any], None] | None = None) -> Any:
        """Trigger one run of the pipeline DAG on the local Airflow and wait for it (issue 14).

        The outcome of each batch job is recorded in the state file, so ``status`` shows the
        Spark job's and the data-quality gate's last run next to the long-running components.
        """
        from .airflow import trigger_and_wait
        from .components import DAG_ID

        with self._locked() as state:
            if not self._alive(state.components.get("airflow")):
                raise TargetError(
                    "Airflow is not running on the local target; run `clinops up --levels 5` first"
                )
        url = self._component("airflow").endpoint()
        run = trigger_and_wait(url, DAG_ID, run_id, timeout=timeout, progress=progress)
        log_dir = self.settings.state_dir / "airflow" / "task-logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
        tasks = {task_id: name for name, (task_id, _) in DAG_JOBS.items()}
        with self._locked() as state:
            for task in run.tasks:
                if task.task_id in tasks:
                    state.pipeline_runs[tasks[task.task_id]] = PipelineRunRecord(
                        run_id=run_id, state=task.state, started_at=task.started_at,
                        ended_at=task.ended_at, duration=task.duration,
                        log_file=str(log_dir / f"task_id={task.task_id}" / "attempt=1.log"),
                    )
        return run

    def cdc_audit(self, *, timeout: float = 60.0) -> Any:
        """The observations table against its Debezium changelog and the gateway's persisted events
        (:func:`clinops_lib.pipeline.cdc_audit.audit`); needs ``debezium-cdc`` running."""
        from ...pipeline.cdc_audit import audit
        from .components import pg_dsn
        from .kafka_connect import cdc_topic

        if not self._alive(self.state().components.get("debezium-cdc")):
            raise TargetError("debezium-cdc is not running on the local target; run "
                              "`clinops up --with debezium-cdc` first")
        return audit(f"127.0.0.1:{self.settings.ports.kafka}", cdc_topic(), pg_dsn(self.settings),
                     timeout=timeout)

    def pipeline_validation(self, run_id: str) -> dict[str, Any] | None:
        """The data-quality gate's result of DAG run ``run_id`` as its task wrote it (None when the
        task did not get that far): the objects checked and great-expectations' validation results
        of every suite (``<state>/pipeline/validation/<run id>/result.json``; its ``summary.md``,
        the human-readable form, is returned as ``summary_markdown``)."""
        import json

        from ...pipeline.quality import RUN_ID_RULE

        if not RUN_ID_RULE.match(run_id):
            raise TargetError(f"run id {run_id!r} is not a DAG run id (letters, digits, _ . ~ : + -)")
        folder = self.settings.state_dir / "pipeline" / "validation" / run_id
        try:
            doc = json.loads((folder / "result.json").read_text(encoding="utf-8"))
            summary = (folder / "summary.md").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return {**doc, "summary_markdown": summary}

    def _up_job_runtime(self, state: LocalState, name: str, say: Progress) -> bool:
        """Level 2 is batch jobs (run by the DAG): deploying one = checking its runtime is complete."""
        if name in state.jobs:
            say(f"{name}: runtime already checked")
            return False
        t0 = time.time()
        missing = _job_runtime_missing(self.settings, name)
        if missing:
            raise PrerequisiteError(f"{name}: {missing}")
        state.jobs[name] = JobRecord(started_at=t0, ready_at=time.time())
        say(f"{name}: runtime ready ({_job_runtime(self.settings, name)}); the DAG runs the job")
        return True

    def alerts(self, alertname: str | None = None) -> list[dict[str, Any]]:
        """The alerts as the local Alertmanager holds them now (optionally one alert name), for evidence."""
        from .components import Alertmanager

        am = cast(Alertmanager, self._component("alertmanager"))
        found = cast(list[dict[str, Any]], am.alerts())
        return [a for a in found
                if alertname is None or (a.get("labels") or {}).get("alertname") == alertname]

    def watch_alerts(self, alertname: str, interval: float = 0.25) -> Any:
        """An :class:`~.components.AlertWatch`: ``with platform.watch_alerts(name) as w:`` polls the
        local Alertmanager while the block runs (a drill), ``w.seen()`` is every alert it held."""
        from .components import Alertmanager, AlertWatch

        return AlertWatch(cast(Alertmanager, self._component("alertmanager")), alertname, interval)

    def _job_status(self, level: int, name: str, state: LocalState) -> ComponentStatus:
        """A batch job of the pipeline DAG: its last recorded run (``pipeline_runs``), else 'not run'."""
        run = state.pipeline_runs.get(name)
        if run is None:
            ready = state.jobs.get(name)
            if ready is None:
                return ComponentStatus(level, name, "stopped", detail="batch job of the DAG: not deployed")
            missing = _job_runtime_missing(self.settings, name)
            return ComponentStatus(
                level, name, "unhealthy" if missing else "healthy", version=_job_version(self.settings, name),
                started_at=ready.started_at, ready_at=ready.ready_at,
                seconds_to_ready=ready.ready_at - ready.started_at,
                detail=f"batch job cannot run: {missing}" if missing else
                "batch job of the pipeline DAG, not run yet; runtime ready "
                f"({_job_runtime(self.settings, name)})",
            )
        return ComponentStatus(
            level, name, "healthy" if run.state == "success" else "unhealthy",
            version=_job_version(self.settings, name),
            started_at=run.started_at,
            ready_at=run.ended_at,
            seconds_to_ready=run.duration,
            detail=f"DAG run {run.run_id}: task {run.state}" + self._job_findings(name, run),
            log_file=run.log_file,
        )

    def _job_findings(self, name: str, run: PipelineRunRecord) -> str:
        """For the data-quality gate: what its last run found (expectations met, or those not met)."""
        if DAG_JOBS[name][0] != "data_quality":
            return ""
        try:
            found = self.pipeline_validation(run.run_id)
        except (TargetError, ValueError):  # a damaged result file: the task's state still says it
            return "; validation result unreadable"
        if found is None:
            return "; no validation result written"
        from ...pipeline.quality import failed_expectations

        failed = failed_expectations(found.get("results", {}))
        if failed:
            return "; not met: " + ", ".join(failed)
        results = found.get("results", {}).values()
        met = sum(r.get("statistics", {}).get("successful_expectations", 0) for r in results)
        return f"; {met} expectations met"

    def _infra_status(self, level: int, name: str, entry: ComponentRecord | None) -> ComponentStatus:
        comp = self._component(name)
        row = ComponentStatus(level, name, "stopped", endpoint=comp.endpoint(), log_file=str(comp.log_file))
        if entry:
            problem = getattr(comp, "problem", None)  # a component that can say why it is unhealthy
            self._judge(row, entry, comp.healthy, "health check failed")
            if row.health == "unhealthy" and problem is not None and entry.alive():
                row.detail = f"{problem()} (log: {comp.log_file})"
            elif row.health == "unhealthy":
                row.detail = f"{row.detail} (log: {comp.log_file})"
        elif catalog_component(name).opt_in:
            row.detail = f"opt-in, not started: `clinops up` of every level or `clinops up --with {name}`"
        return row

    def _service_status(self, level: int, service: str, state: LocalState) -> ComponentStatus:
        entry = state.track(service, "stable")
        row = ComponentStatus(
            level,
            service,
            "stopped",
            endpoint=self.service_url(service),
            log_file=str(self.settings.state_dir / "logs" / f"{service}-stable.log"),
        )
        if entry is None:
            return row
        self._judge(row, entry, lambda: http_ok(f"{entry.endpoint}/readyz"), "/readyz does not answer 200")
        canary = state.track(service, "canary")
        if canary is not None and canary.alive():
            w = state.weight(service).canary
            row.detail = (row.detail + "; " if row.detail else "") + f"canary {canary.version} at {w}%"
        return row

    def _judge(self, row: ComponentStatus, entry: ProcessRecord, probe: Callable[[], bool],
               failed: str) -> None:
        """Fill ``row`` from a recorded process: version and timings, then health (the process
        must be alive before ``probe`` is asked; ``failed`` is the detail when it says no)."""
        row.version = entry.version
        row.started_at, row.ready_at = entry.started_at, entry.ready_at
        if row.started_at and row.ready_at:
            row.seconds_to_ready = row.ready_at - row.started_at
        if not entry.alive():
            row.health, row.detail = "unhealthy", f"process {entry.pid} is not running"
        elif probe():
            row.health = "healthy"
        else:
            row.health, row.detail = "unhealthy", failed

    def down(self, *, purge: bool = False) -> None:
        if not self.settings.state_dir.exists():
            return
        with self._locked() as state:
            for service in SERVICES:
                for track in TRACKS:
                    self._stop_track(state, service, track)
            state.jobs.clear()
            state.pipeline_runs.clear()
            for name in STOP_ORDER:
                entry = state.components.pop(name, None)
                if entry is not None:
                    pg = name == "postgresql"  # postmaster alone, "fast" shutdown
                    sup.stop(entry.process(), stop_signal=signal.SIGINT if pg else signal.SIGTERM,
                             signal_group=not pg)
                spec_path = self.settings.state_dir / "run" / f"{name}.pid"
                # a pid file whose process is not in the state (a crashed `up`): stop it too
                leftover = sup.read_pid_file(spec_path)
                if leftover is not None:
                    sup.stop(leftover)
                spec_path.unlink(missing_ok=True)
            for pid_file in (self.settings.state_dir / "run").glob("*.pid"):
                leftover = sup.read_pid_file(pid_file)
                if leftover is not None:
                    sup.stop(leftover)
                pid_file.unlink(missing_ok=True)
        if purge:
            haproxy = self._component("haproxy")
            shutil.rmtree(self.settings.state_dir, ignore_errors=True)
            cast(HAProxy, haproxy).admin_path.unlink(missing_ok=True)


#: The pipeline DAG's batch jobs that are catalog components (Level 2): component -> (its DAG task,
#: the distribution in ``.venv-pipeline`` whose version the component reports).
DAG_JOBS: dict[str, tuple[str, str]] = {
    "spark": ("spark_features", "pyspark"),
    "data-quality (great-expectations)": ("data_quality", "great_expectations"),
}


def _job_version(settings: Settings, name: str) -> str:
    dist = DAG_JOBS[name][1]
    venv = settings.project_root / ".venv-pipeline"
    found = sorted(venv.glob(f"lib/python3*/site-packages/{dist}-*.dist-info"))
    return found[0].name.removeprefix(f"{dist}-").removesuffix(".dist-info") if found else ""


def _job_runtime(settings: Settings, name: str) -> str:
    """What the job runs with, in words (for ``up`` and ``status``)."""
    version = _job_version(settings, name)
    if name == "spark":
        return f"pyspark {version}, Java, JDBC driver"
    from ...pipeline.quality import SUITES

    return f"great-expectations {version}, suites {', '.join(SUITES)}"


def _job_runtime_missing(settings: Settings, name: str) -> str:
    """What a batch job of the DAG lacks on this machine ('' when it can run)."""
    from ...pipeline.quality import load_suite
    from ...pipeline.spark_job import JDBC_JAR

    if not _job_version(settings, name):
        return f"{DAG_JOBS[name][1]} not in .venv-pipeline (run scripts/setup.sh)"
    if name == "spark":
        if shutil.which("java") is None:
            return "no 'java' (Debian openjdk-17-jre-headless)"
        if not JDBC_JAR.exists():
            return f"{JDBC_JAR} missing (Debian libpostgresql-jdbc-java)"
        return ""
    from ...pipeline.quality import SUITES

    for suite in SUITES:  # the gate must not fail on its own suite file
        try:
            load_suite(suite)
        except (OSError, ValueError) as e:
            return f"expectation suite {suite}: {e}"
    return ""


def _needs(name: str) -> tuple[str, ...]:
    """Components that must be healthy before ``name``'s process starts (see components.py, issue 14)."""
    return tuple(getattr(INFRA[name], "needs", ()))


def _in_background(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` in a daemon thread now; the returned callable joins it and returns (or raises)
    its result. Used for work that only needs the CPU while the caller waits on a process."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name=f"clinops-{getattr(fn, '__name__', 'bg')}", daemon=True)
    thread.start()

    def result() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return result


def _port_error(component: str, port: int, log_file: Path) -> ComponentError:
    return PortInUseError(
        component,
        f"port 127.0.0.1:{port} is already in use by another process; nothing was started",
        str(log_file),
    )

