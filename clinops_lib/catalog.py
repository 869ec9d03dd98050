"""The catalog: one place for each of the platform's facts; everything else imports them.

* **Levels 0-6** as data: components, order, health checks, what each is per target, and the
  Helm subchart that deploys the level (``Level.chart``: the one meaning of "level"; the charts'
  subchart names and namespaces are derived from it). One table drives ``clinops up``,
  ``clinops status`` (on every target) and the runbooks' component tables, so a component that a
  target does not run (Grafana on the local target, say) is still listed — as "not on this
  target" — and never shown as deployed. An *opt-in* component (``Component.opt_in``: Debezium
  on Kafka Connect) is started by an ``up`` of every level or when named, not by a partial one
  (:func:`opt_in_components`), so a drill does not wait for it.
* **Services**: the online services with their level, chart values key, rollout strategy and the
  request path load is sent to. Their order is their index (ports on the local target).
* **Environments**: ``dev``, ``staging``, ``prod``.
* **The version rule**: one regular expression for every version a target deploys, a drill
  accepts or a service reports (1-64 characters of ``A-Z a-z 0-9 . _ -``, starting with a
  letter or digit: a valid OCI image tag and label value, so a version is never pasted into an
  image reference unchecked).
* **One percentile definition** (:func:`percentile`): linear interpolation between order
  statistics (Hyndman & Fan type 7, numpy's and pandas' default), used by the judge, the load
  generator, the plots and the evidence tables, so one set of requests has one p95 everywhere.

This module imports nothing of the orchestration side (services read the version rule from it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .exceptions import ConfigError, ParameterError

__all__ = [
    "ENVIRONMENTS",
    "LEVELS",
    "SERVICES",
    "VERSION_RULE",
    "Component",
    "Level",
    "Service",
    "built_images",
    "check_environment",
    "check_version",
    "component",
    "components",
    "level",
    "level_names",
    "opt_in_components",
    "parse_levels",
    "percentile",
    "register_target",
    "resolve_levels",
    "service",
    "service_names",
    "target_implementation",
    "target_names",
]

#: The deployment environments (one values file each: ``charts/clinical-mlops/values-<env>.yaml``).
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")


@dataclass(frozen=True)
class Component:
    """One component of one level.

    ``on`` maps a target kind (``local``, ``kube``) to what the component *is* there; a
    target missing from ``on`` does not run the component, and ``why_not`` says why (for the
    runbook's "not on this target" row and the README). ``health`` says in words what the
    health check proves, for the runbook table and the auditor. ``image`` is the image repository
    the charts pin for a workload the project builds itself (from ``services/<name>/Dockerfile``;
    the Debian cluster builds and imports it under that name), empty for everything else.

    ``opt_in`` marks an add-on of its level that a partial ``up`` leaves out unless named
    (:func:`opt_in_components`): a drill or a test that needs Level 1 for the gateway must not wait
    for Kafka Connect's JVM. ``up`` of every level starts it, as does naming it.
    """

    name: str
    level: int
    on: dict[str, str] = field(default_factory=dict)
    health: str = ""
    image: str = ""
    why_not: dict[str, str] = field(default_factory=dict)
    opt_in: bool = False

    def runs_on(self, target: str) -> bool:
        return _kind(target) in self.on

    def what_on(self, target: str) -> str:
        """What the component is on ``target``; else "not on this target", with the reason when known."""
        if self.runs_on(target):
            return self.on[_kind(target)]
        why = self.why_not.get(_kind(target), "")
        return f"not on this target: {why}" if why else "not on this target"


@dataclass(frozen=True)
class Level:
    """One level: its components in start order, the levels it needs, and how the charts deploy it.

    ``chart`` is the level's subchart of ``charts/clinical-mlops`` (and its Helm release
    ``clinops-<chart>``); ``namespace_key`` the key of ``global.namespaces`` naming its namespace.
    """

    number: int
    name: str
    components: tuple[Component, ...]
    requires: tuple[int, ...] = ()
    chart: str = ""
    namespace_key: str = ""


@dataclass(frozen=True)
class Service:
    """An online service: what the drills move traffic for and the targets deploy."""

    name: str
    level: int
    values_key: str  # its block in the level subchart's values (``gateway``, ``serving``)
    strategy: Literal["canary", "blueGreen"]  # the Argo Rollouts strategy its chart declares
    path: str  # where the load generator sends requests


def _kind(target: str) -> str:
    return "local" if target == "local" else "kube"


def _c(
    name: str, level: int, health: str = "", *, image: str = "", why_not_local: str = "",
    opt_in: bool = False, **on: str
) -> Component:
    why_not = {"local": why_not_local} if why_not_local else {}
    return Component(name, level, dict(on), health, image, why_not, opt_in)


# Order inside a level is start order on the local target.
LEVELS: tuple[Level, ...] = (
    Level(
        0,
        "infrastructure",
        (
            _c(
                "postgresql",
                0,
                "SQL `SELECT 1` over TCP",
                local="PostgreSQL 15 process (initdb + postgres -D) on loopback",
                kube="PostgreSQL (Bitnami chart) / RDS in AWS",
            ),
            _c("redis", 0, "Redis PING", local="Redis 7 process with generated config", kube="Redis (chart)"),
            _c(
                "localstack",
                0,
                "GET /_localstack/health: s3, sqs, sns, secretsmanager available",
                local="LocalStack 4.12 (S3, SQS, SNS, Secrets Manager)",
                kube="AWS (S3, SQS, SNS, Secrets Manager)",
            ),
            _c(
                "haproxy",
                0,
                "stats frontend answers; admin socket answers `show info`",
                local="HAProxy 2.6 (traffic layer: weighted stable/canary backends)",
                kube="Istio ingress gateway + VirtualService",
            ),
            _c(
                "kubernetes",
                0,
                "API server /readyz",
                why_not_local="the local target is supervised processes on loopback, no cluster; a real "
                "Kubernetes 1.20 runs on this machine with `clinops cluster create --provider debian` "
                "(then --target kubeconfig)",
                kube="Kubernetes cluster (kind or kubeconfig)",
            ),
        ),
        chart="infrastructure",
        namespace_key="infrastructure",
    ),
    Level(
        1,
        "data ingestion",
        (
            _c(
                "clinical-gateway",
                1,
                "GET /readyz through HAProxy",
                image="clinical-gateway",
                local="uvicorn process (stable + canary tracks)",
                kube="Argo Rollout (canary, Istio traffic)",
            ),
            _c(
                "kafka",
                1,
                "metadata request answered; events topic exists",
                local="Apache Kafka 3.8 broker, KRaft mode (jars from the Maven cache, Java 17)",
            ),
            _c(
                "kafka-consumer",
                1,
                "consumer group Stable with a member (broker's view)",
                local="consumer group persisting events to PostgreSQL (observation_events)",
            ),
            _c(
                "debezium-cdc",
                1,
                "Connect REST API: connector and its task RUNNING; PostgreSQL: replication slot streaming",
                local="Kafka Connect 3.8 (standalone) + Debezium PostgreSQL connector: the observations "
                "table's changes (pgoutput, wal_level=logical) to the clinops-cdc.* topic; opt-in",
                opt_in=True,
            ),
        ),
        requires=(0,),
        chart="data-ingestion",
        namespace_key="ingestion",
    ),
    Level(
        2,
        "data processing",
        (
            _c(
                "spark",
                2,
                "last pipeline run's Spark task succeeded (Airflow's record)",
                local="Spark 3.5 local mode: batch job of the pipeline DAG (PostgreSQL -> S3 Parquet)",
            ),
            _c(
                "data-quality (great-expectations)",
                2,
                "last pipeline run's data_quality task succeeded (Airflow's record): every expectation of "
                "both suites met on the Spark job's Parquet (complete vitals, diastolic below systolic, "
                "plausible ranges, one row per subject and visit; one row per subject, no missing feature)",
                local="great-expectations 1.24 in .venv-pipeline: the DAG's data_quality task runs the "
                "repository's suites (clinops_lib/pipeline/expectations/) on the Spark job's staged S3 "
                "Parquet and publishes it for Feast and training only when every expectation is met; a "
                "failed expectation fails the run before Feast materialize and training",
            ),
        ),
        requires=(0,),
        chart="data-processing",
        namespace_key="processing",
    ),
    Level(
        3,
        "feature engineering",
        (
            _c(
                "feast",
                3,
                "feature server GET /health",
                local="Feast feature server (S3 Parquet offline source, Redis online store)",
            ),
        ),
        requires=(0,),
        chart="feature-engineering",
        namespace_key="features",
    ),
    Level(
        4,
        "ML pipeline",
        (
            _c(
                "training-job",
                4,
                "job exit status 0 and model object in S3",
                image="model-training",
                local="python -m clinops_lib.services.training (one-shot)",
                kube="Kubernetes Job",
            ),
            _c(
                "model-serving",
                4,
                "GET /readyz through HAProxy",
                image="model-serving",
                local="uvicorn process (stable + canary tracks)",
                kube="Argo Rollout (blue-green)",
            ),
            _c(
                "mlflow",
                4,
                "GET /health",
                local="MLflow tracking server + model registry (PostgreSQL store, S3 artifacts)",
            ),
        ),
        requires=(0,),
        chart="ml-pipeline",
        namespace_key="ml",
    ),
    Level(
        5,
        "orchestration",
        (
            _c(
                "airflow",
                5,
                "API server: metadatabase, scheduler, DAG processor healthy",
                local="Airflow 3: API server, scheduler, DAG processor (metadata in PostgreSQL)",
            ),
            _c(
                "argo-cd",
                5,
                why_not_local="it syncs Git into a Kubernetes API, which the local target has none of; "
                "`clinops up` deploys the levels in order from the same charts' versions",
                kube="Argo CD (GitOps)",
            ),
            _c(
                "argo-rollouts",
                5,
                why_not_local="a controller of Rollout objects in a Kubernetes API; here the drills run "
                "the chart's canary and blue-green steps themselves through HAProxy weights (the "
                "controller runs on `clinops cluster`)",
                kube="Argo Rollouts controller",
            ),
        ),
        requires=(0, 2, 3, 4),
        chart="orchestration",
        namespace_key="orchestration",
    ),
    Level(
        6,
        "observability",
        (
            _c(
                "prometheus",
                6,
                "GET /-/ready; every scrape target listed",
                local="Prometheus 2.42 (1 s scrapes, platform alert rules)",
                kube="Prometheus (chart) + PrometheusRule",
            ),
            _c(
                "alertmanager",
                6,
                "GET /-/ready",
                local="Alertmanager 0.25 (receives Prometheus' platform alerts)",
            ),
            _c(
                "grafana",
                6,
                why_not_local="out of scope here (issue 14): dashboards stay JSON in the charts; runbooks "
                "plot with plotly",
            ),
            _c(
                "opensearch",
                6,
                why_not_local="out of scope here (issue 14), like Fluent Bit/Fluentd: each component's log "
                "is a file under the state dir's logs/",
            ),
        ),
        chart="observability",
        namespace_key="observability",
    ),
)


#: Online services, in index order.
SERVICES: tuple[Service, ...] = (
    Service("clinical-gateway", 1, "gateway", "canary", "/v1/observations"),
    Service("model-serving", 4, "serving", "blueGreen", "/v1/predict"),
)


def built_images() -> dict[str, str]:
    """``{component: image repository}`` for the workloads built from ``services/<component>/Dockerfile``."""
    return {c.name: c.image for level in LEVELS for c in level.components if c.image}


def service_names() -> tuple[str, ...]:
    return tuple(s.name for s in SERVICES)


def service(name: object, parameter: str = "service") -> Service:
    """The service called ``name``; :class:`ParameterError` naming ``parameter`` otherwise."""
    for s in SERVICES:
        if s.name == name:
            return s
    raise ParameterError(parameter, f"unknown service {name!r}; known: {', '.join(service_names())}")


def check_environment(env: object) -> str:
    """``env`` when it is a known environment; :class:`ConfigError` otherwise."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {env!r}; known: {', '.join(ENVIRONMENTS)}")
    return str(env)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; ``None`` for no values.

    Type 7 of Hyndman & Fan: position ``(n - 1) * q`` between the sorted values, which is what
    ``numpy.quantile`` and ``pandas.Series.quantile`` compute by default.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} outside 0..1")
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    if pos == lo or xs[lo] == xs[hi]:
        # also keeps infinities whole: the judge counts a failed request as infinitely slow,
        # and inf - inf is not a latency
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


#: Where the platform can run: target name -> implementation (``"module:Class"``, loaded lazily,
#: or the class itself). :func:`register_target` adds one; ``Settings`` accepts every name here.
_TARGETS: dict[str, object] = {
    "local": "clinops_lib.targets.local.target:LocalTarget",
    "kind": "clinops_lib.targets.kube.target:KindTarget",
    "kubeconfig": "clinops_lib.targets.kube.target:KubeconfigTarget",
}
_TARGET_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def register_target(name: str, implementation: object) -> None:
    """Register a target: ``"package.module:Class"`` (imported when selected) or the class.

    The class must subclass :class:`clinops_lib.targets.base.Target`; :func:`get_target
    <clinops_lib.targets.base.get_target>` checks that when it is selected.
    """
    if not isinstance(name, str) or not _TARGET_NAME.match(name):
        raise ConfigError(f"target name {name!r}: lower-case letters, digits and '-', at most 32")
    if isinstance(implementation, str) and ":" not in implementation:
        raise ConfigError(f"target {name!r}: {implementation!r} is not 'package.module:Class'")
    _TARGETS[name] = implementation


def target_names() -> tuple[str, ...]:
    """Every registered target name, built-in ones first."""
    return tuple(_TARGETS)


def target_implementation(name: object) -> object:
    """The registered implementation of ``name``; :class:`ConfigError` naming the known ones."""
    if name not in _TARGETS:
        raise ConfigError(f"unknown target {name!r}; known targets: {', '.join(sorted(_TARGETS))}")
    return _TARGETS[str(name)]


def level(number: int) -> Level:
    for lv in LEVELS:
        if lv.number == number:
            return lv
    raise ParameterError("levels", f"level {number} does not exist (known: 0..{len(LEVELS) - 1})")


def level_names() -> dict[int, str]:
    return {lv.number: lv.name for lv in LEVELS}


def components(target: str | None = None) -> list[Component]:
    """Every component in level order (``target`` given: still all, use ``runs_on`` to filter)."""
    return [c for lv in LEVELS for c in lv.components]


def component(name: str) -> Component:
    for c in components():
        if c.name == name:
            return c
    raise ParameterError("component", f"unknown component {name!r}")


def parse_levels(text: str | Iterable[int] | None) -> list[int]:
    """``"0,1,4,6"`` (or a list) -> sorted unique level numbers; None/"" -> all levels."""
    if text is None or text == "" or text == "all":
        return [lv.number for lv in LEVELS]
    known = {lv.number for lv in LEVELS}
    items: list[object] = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out: set[int] = set()
    for item in items:
        try:
            n = int(item)  # type: ignore[call-overload]
        except (TypeError, ValueError) as e:
            raise ParameterError("levels", f"{item!r} is not a level number (known: 0..6)") from e
        if n not in known:
            raise ParameterError("levels", f"level {n} does not exist (known: 0..6)")
        out.add(n)
    return sorted(out)


def opt_in_components(levels: Sequence[int], named: Iterable[str] | None = None) -> list[str]:
    """The opt-in components (``Component.opt_in``) an ``up`` of ``levels`` starts.

    ``named`` None: all of them when ``levels`` is every level (the whole platform), none for a
    partial ``up`` (a drill's 0,1,4,6). ``named`` given: exactly those (each must be an opt-in
    component; its level is then part of the ``up``), :class:`ParameterError` otherwise.
    """
    everything = [c for lv in LEVELS for c in lv.components if c.opt_in]
    if named is None:
        full = set(levels) >= {lv.number for lv in LEVELS}
        return [c.name for c in everything] if full else []
    names = [named] if isinstance(named, str) else list(named)
    known = {c.name for c in everything}
    for n in names:
        if n not in known:
            raise ParameterError(
                "with", f"{n!r} is not an opt-in component (known: {', '.join(sorted(known))})"
            )
    return sorted(set(names))


def resolve_levels(levels: Sequence[int]) -> list[int]:
    """Add the levels the requested ones need (Level 1 needs Level 0's databases), sorted."""
    by_number = {lv.number: lv for lv in LEVELS}
    out: set[int] = set()
    todo = list(levels)
    while todo:
        n = todo.pop()
        if n in out:
            continue
        out.add(n)
        todo.extend(by_number[n].requires)
    return sorted(out)


# -- versions ------------------------------------------------------------------------------------------
#: The one rule for a service version, whatever the target: the local target passes it to the
#: process, Kubernetes uses it as an image tag and a label value (no "+", at most 63 characters
#: after the first). A version that one target would accept and another refuse is refused by all.
VERSION_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_version(value: object, name: str = "version") -> str:
    """``value`` if it is a version by :data:`VERSION_RULE`; else ParameterError naming ``name``."""
    if not isinstance(value, str) or not VERSION_RULE.match(value):
        shown = repr(value) if len(repr(value)) <= 70 else repr(value)[:60] + "..."
        raise ParameterError(
            name,
            f"{shown} is not a version: 1-64 characters of letters, digits, '.', '_' and '-', starting "
            "with a letter or digit (the same rule on every target: it is an image tag on Kubernetes)",
        )
    return value
