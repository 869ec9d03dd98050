"""The catalog: one place for the platform's facts, starting with its Levels 0-6 as data.

Levels: components, order, health checks, and what each is per target. One table drives
``clinops up``, ``clinops status`` and the runbooks' component tables, so a
component that a target does not run (Grafana on the local target, say) is still listed — as
"not on this target" — and never shown as deployed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .exceptions import ParameterError

__all__ = [
    "LEVELS",
    "VERSION_RULE",
    "check_version",
    "Component",
    "Level",
    "component",
    "components",
    "level_names",
    "parse_levels",
    "resolve_levels",
]


@dataclass(frozen=True)
class Component:
    """One component of one level.

    ``on`` maps a target kind (``local``, ``kube``) to what the component *is* there; a
    target missing from ``on`` does not run the component. ``health`` says in words what the
    health check proves, for the runbook table and the auditor.
    """

    name: str
    level: int
    on: dict[str, str] = field(default_factory=dict)
    health: str = ""

    def runs_on(self, target: str) -> bool:
        return _kind(target) in self.on

    def what_on(self, target: str) -> str:
        return self.on.get(_kind(target), "not on this target")


@dataclass(frozen=True)
class Level:
    number: int
    name: str
    components: tuple[Component, ...]
    requires: tuple[int, ...] = ()


def _kind(target: str) -> str:
    return "local" if target == "local" else "kube"


def _c(name: str, level: int, health: str = "", **on: str) -> Component:
    return Component(name, level, dict(on), health)


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
            _c("kubernetes", 0, "API server /readyz", kube="Kubernetes cluster (kind or kubeconfig)"),
        ),
    ),
    Level(
        1,
        "data ingestion",
        (
            _c(
                "clinical-gateway",
                1,
                "GET /readyz through HAProxy",
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
            _c("debezium-cdc", 1),
        ),
        requires=(0,),
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
            _c("data-quality (great-expectations)", 2),
        ),
        requires=(0,),
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
    ),
    Level(
        4,
        "ML pipeline",
        (
            _c(
                "training-job",
                4,
                "job exit status 0 and model object in S3",
                local="python -m clinops_lib.services.training (one-shot)",
                kube="Kubernetes Job",
            ),
            _c(
                "model-serving",
                4,
                "GET /readyz through HAProxy",
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
            _c("argo-cd", 5, kube="Argo CD (GitOps)"),
            _c("argo-rollouts", 5, kube="Argo Rollouts controller"),
        ),
        requires=(0, 2, 3, 4),
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
            _c("grafana", 6),
            _c("opensearch", 6),
        ),
    ),
)


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


def check_version(value: object, name: str) -> str:
    """``value`` if it is a version by :data:`VERSION_RULE`; else ParameterError naming ``name``."""
    if not isinstance(value, str) or not VERSION_RULE.match(value):
        shown = repr(value) if len(repr(value)) <= 70 else repr(value)[:60] + "..."
        raise ParameterError(
            name,
            f"{shown} is not a version: 1-64 characters of letters, digits, '.', '_' and '-', starting "
            "with a letter or digit (the same rule on every target: it is an image tag on Kubernetes)",
        )
    return value
