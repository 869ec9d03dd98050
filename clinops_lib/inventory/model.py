"""The platform's AWS inventory: one JSON file, applied by Terraform on AWS and by boto3 on LocalStack.

``terraform/inventory.tfvars.json`` is the single source of the S3 buckets, SQS queues (each
with its dead-letter queue), SNS topics with their queue subscriptions and Secrets Manager
secrets (names and descriptions only: values are generated at apply time and live only in
Secrets Manager). Terraform reads it with ``-var-file``; this module reads the same file,
validates it into dataclasses, applies it idempotently and reports *drift* between the file
and what is live. Names are ``<project>-<env>-<key>`` so environments share one account.

Pipeline::

    load_inventory(path, env) -> Inventory          (bad entry: InventoryError, nothing touched)
    apply_inventory(inventory, clients) -> ApplyReport   (create/update; second run: no change)
    drift(inventory, clients) -> list[Difference]        (missing, unexpected, mismatched)
    provision(settings) -> ProvisionReport               (terraform if on PATH, else boto3)

Apply and drift share one normalisation (:func:`_desired` / :func:`_observe`), so "what apply
would change" and "what drift reports" cannot disagree.
"""


from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..config import project_root
from ..exceptions import InventoryError

__all__ = [
    "EVENTS_TOPIC",
    "MODEL_BUCKET",
    "Bucket",
    "Inventory",
    "LifecycleRule",
    "Queue",
    "Secret",
    "Subscription",
    "Topic",
    "default_inventory_path",
    "load_inventory",
    "parse_inventory",
    "service_resources",
]

#: Inventory keys the services are wired to (validated to exist by :func:`parse_inventory`).
EVENTS_TOPIC = "observations"
MODEL_BUCKET = "model-artifacts"
MODEL_KEY = "models/risk-model/current/model.joblib"
REGION = "us-east-1"
DLQ_SUFFIX = "-dlq"
SNS_KMS_KEY = "alias/aws/sns"
Progress = Callable[[str], None]

_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
_SSE = ("aws:kms", "AES256")
_STORAGE_CLASSES = ("STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER",
                    "DEEP_ARCHIVE")


# -- the model -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LifecycleRule:
    """One S3 lifecycle rule; ``None`` means the action is not part of the rule."""

    id: str
    prefix: str = ""
    expiration_days: int | None = None
    noncurrent_expiration_days: int | None = None
    transition_days: int | None = None
    storage_class: str | None = None
    noncurrent_transition_days: int | None = None
    noncurrent_storage_class: str | None = None
    abort_multipart_days: int | None = None

    def normalised(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS["lifecycle_rule"] if getattr(self, k) is not None}


@dataclass(frozen=True)
class Bucket:
    key: str
    name: str
    versioning: bool
    sse_algorithm: str
    lifecycle_rules: tuple[LifecycleRule, ...]
    purpose: str = ""
    #: S3 Object Lock: mode (COMPLIANCE: nobody, not even root, shortens or removes it) and the
    #: default retention in days for this inventory's environment; None = no lock.
    object_lock_mode: str | None = None
    object_lock_days: int | None = None


@dataclass(frozen=True)
class Queue:
    key: str
    name: str
    visibility_timeout_seconds: int
    message_retention_seconds: int
    max_receive_count: int
    dlq_retention_seconds: int
    purpose: str = ""

    @property
    def dlq_name(self) -> str:
        return self.name + DLQ_SUFFIX


@dataclass(frozen=True)
class Subscription:
    queue: str  # inventory key of the queue
    raw_message_delivery: bool


@dataclass(frozen=True)
class Topic:
    key: str
    name: str
    subscriptions: tuple[Subscription, ...]
    purpose: str = ""


@dataclass(frozen=True)
class Secret:
    key: str
    name: str
    description: str


@dataclass(frozen=True)
class Inventory:
    """The validated inventory for one environment; names already carry the prefix."""

    project: str
    env: str
    buckets: dict[str, Bucket]
    queues: dict[str, Queue]
    topics: dict[str, Topic]
    secrets: dict[str, Secret]
    source: Path | None = None

    @property
    def prefix(self) -> str:
        return f"{self.project}-{self.env}-"


# Field names per entry kind, and which are required. The Terraform variable types in
# terraform/variables.tf must declare exactly these (tests/test_terraform.py checks it).
_FIELDS: dict[str, tuple[str, ...]] = {
    "bucket": ("purpose", "versioning", "sse_algorithm", "lifecycle_rules", "object_lock"),
    "object_lock": ("mode", "retention_days"),
    "lifecycle_rule": ("id", "prefix", "expiration_days", "noncurrent_expiration_days", "transition_days",
                       "storage_class", "noncurrent_transition_days", "noncurrent_storage_class",
                       "abort_multipart_days"),
    "queue": ("purpose", "visibility_timeout_seconds", "message_retention_seconds", "max_receive_count",
              "dlq_retention_seconds"),
    "topic": ("purpose", "subscriptions"),
    "subscription": ("queue", "raw_message_delivery"),
    "secret": ("description",),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "bucket": ("versioning", "sse_algorithm", "lifecycle_rules"),
    "object_lock": ("mode", "retention_days"),
    "lifecycle_rule": ("id", "abort_multipart_days"),
    "queue": ("visibility_timeout_seconds", "message_retention_seconds", "max_receive_count",
              "dlq_retention_seconds"),
    "topic": ("subscriptions",),
    "subscription": ("queue", "raw_message_delivery"),
    "secret": ("description",),
}
TOP_LEVEL_KEYS = ("project", "buckets", "queues", "topics", "secrets")


def default_inventory_path() -> Path:
    return project_root() / "terraform" / "inventory.tfvars.json"


# -- loading and validation --------------------------------------------------------------------
class _Entry:
    """Reads typed fields of one inventory entry; every error names the entry and the field."""

    def __init__(self, where: str, kind: str, raw: Any) -> None:
        self.where = where
        if not isinstance(raw, dict):
            raise InventoryError(f"{where}: must be an object, got {type(raw).__name__}")
        if kind == "secret":
            for bad in ("value", "secret_string", "password", "secret_value"):
                if bad in raw:
                    raise InventoryError(f"{where}.{bad}: secret values never live in the inventory; "
                                         "they are generated at apply time and kept only in Secrets Manager")
        unknown = sorted(set(raw) - set(_FIELDS[kind]))
        if unknown:
            raise InventoryError(f"{where}.{unknown[0]}: unknown field; allowed: {', '.join(_FIELDS[kind])}")
        missing = [f for f in _REQUIRED[kind] if raw.get(f) is None]
        if missing:
            raise InventoryError(f"{where}.{missing[0]}: required field is missing")
        self.raw = raw

    def fail(self, name: str, message: str) -> InventoryError:
        return InventoryError(f"{self.where}.{name}: {message}, got {self.raw.get(name)!r}")

    def int_(self, name: str, lo: int, hi: int, *, optional: bool = False) -> int | None:
        v = self.raw.get(name)
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
            raise self.fail(name, f"must be an integer in {lo}..{hi}")
        return v

    def bool_(self, name: str) -> bool:
        v = self.raw.get(name)
        if not isinstance(v, bool):
            raise self.fail(name, "must be true or false")
        return v

    def str_(self, name: str, *, choices: tuple[str, ...] | None = None, optional: bool = False,
             default: str | None = "") -> str | None:
        v = self.raw.get(name)
        if v is None and optional:
            return default
        if not isinstance(v, str):
            raise self.fail(name, "must be a string")
        if choices is not None and v not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}")
        return v

    def list_(self, name: str) -> list[Any]:
        v = self.raw.get(name)
        if not isinstance(v, list):
            raise self.fail(name, "must be a list")
        return v


def _check_key(section: str, key: Any, name: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InventoryError(f"{section}.{key}: entry name must be lower-case letters, digits and dashes")
    if section == "buckets" and not (3 <= len(name) <= 63):
        raise InventoryError(f"{section}.{key}: bucket name {name!r} must be 3..63 characters")
    if section in ("queues", "topics") and len(name) + len(DLQ_SUFFIX) > 80:
        raise InventoryError(f"{section}.{key}: name {name!r} is too long for SQS/SNS (80 characters)")


def _rule(where: str, raw: Any) -> LifecycleRule:
    e = _Entry(where, "lifecycle_rule", raw)
    rule = LifecycleRule(
        id=str(e.str_("id")),
        prefix=str(e.str_("prefix", optional=True)),
        expiration_days=e.int_("expiration_days", 1, 36500, optional=True),
        noncurrent_expiration_days=e.int_("noncurrent_expiration_days", 1, 36500, optional=True),
        transition_days=e.int_("transition_days", 0, 36500, optional=True),
        storage_class=e.str_("storage_class", choices=_STORAGE_CLASSES, optional=True, default=None),
        noncurrent_transition_days=e.int_("noncurrent_transition_days", 1, 36500, optional=True),
        noncurrent_storage_class=e.str_("noncurrent_storage_class", choices=_STORAGE_CLASSES,
                                        optional=True, default=None),
        abort_multipart_days=e.int_("abort_multipart_days", 1, 36500, optional=True),
    )
    if not rule.id:
        raise e.fail("id", "must not be empty")
    if (rule.transition_days is None) != (rule.storage_class is None):
        raise e.fail("storage_class", "transition_days and storage_class go together")
    if (rule.noncurrent_transition_days is None) != (rule.noncurrent_storage_class is None):
        raise e.fail("noncurrent_storage_class",
                     "noncurrent_transition_days and noncurrent_storage_class go together")
    if rule.expiration_days is not None and rule.transition_days is not None \
            and rule.expiration_days <= rule.transition_days:
        raise e.fail("expiration_days", f"must be later than transition_days ({rule.transition_days})")
    return rule


def _object_lock(where: str, raw: Any, env: str) -> tuple[str | None, int | None]:
    """``(mode, days for env)`` of an ``object_lock`` entry; (None, None) when absent.

    Retention is per environment (a day in dev so test objects expire, years in prod)."""
    if raw is None:
        return None, None
    e = _Entry(where, "object_lock", raw)
    mode = str(e.str_("mode", choices=("COMPLIANCE", "GOVERNANCE")))
    days = raw.get("retention_days")
    if not isinstance(days, dict) or set(days) != set(catalog.ENVIRONMENTS):
        raise e.fail("retention_days", f"must give days for each of {', '.join(catalog.ENVIRONMENTS)}")
    for name, value in days.items():
        if not isinstance(value, int) or isinstance(value, bool) or not (1 <= value <= 36500):
            raise InventoryError(
                f"{where}.retention_days.{name}: must be an integer in 1..36500, got {value!r}")
    return mode, int(days[env])


def parse_inventory(data: Any, env: str = "dev", source: Path | None = None) -> Inventory:
    """Validate an already-parsed inventory document (what :func:`load_inventory` reads)."""
    if env not in catalog.ENVIRONMENTS:
        raise InventoryError(f"environment {env!r} unknown; known: {', '.join(catalog.ENVIRONMENTS)}")
    if not isinstance(data, dict):
        raise InventoryError("inventory: top level must be an object")
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise InventoryError(f"{unknown[0]}: unknown top-level key; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    for key in TOP_LEVEL_KEYS:
        if key not in data:
            raise InventoryError(f"{key}: required top-level key is missing")
    project = data["project"]
    if not isinstance(project, str) or not _KEY_RE.match(project):
        raise InventoryError(f"project: must be lower-case letters, digits and dashes, got {project!r}")
    for section in ("buckets", "queues", "topics", "secrets"):
        if not isinstance(data[section], dict):
            raise InventoryError(f"{section}: must be an object of name -> entry")
    prefix = f"{project}-{env}-"

    buckets: dict[str, Bucket] = {}
    for key, raw in data["buckets"].items():
        _check_key("buckets", key, prefix + key)
        e = _Entry(f"buckets.{key}", "bucket", raw)
        rules = tuple(_rule(f"buckets.{key}.lifecycle_rules[{i}]", r)
                      for i, r in enumerate(e.list_("lifecycle_rules")))
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            raise e.fail("lifecycle_rules", "rule ids must be unique")
        if not rules:
            raise e.fail("lifecycle_rules", "needs at least one rule (retention is part of the design)")
        if not e.bool_("versioning"):
            raise e.fail("versioning", "must be true: GxP records keep every version (21 CFR Part 11)")
        lock_mode, lock_days = _object_lock(f"buckets.{key}.object_lock", raw.get("object_lock"), env)
        buckets[key] = Bucket(key=key, name=prefix + key, versioning=True,
                              sse_algorithm=str(e.str_("sse_algorithm", choices=_SSE)),
                              lifecycle_rules=rules, purpose=str(e.str_("purpose", optional=True)),
                              object_lock_mode=lock_mode, object_lock_days=lock_days)

    queues: dict[str, Queue] = {}
    for key, raw in data["queues"].items():
        _check_key("queues", key, prefix + key)
        e = _Entry(f"queues.{key}", "queue", raw)
        queues[key] = Queue(
            key=key, name=prefix + key,
            visibility_timeout_seconds=int(e.int_("visibility_timeout_seconds", 0, 43200) or 0),
            message_retention_seconds=int(e.int_("message_retention_seconds", 60, 1209600) or 0),
            max_receive_count=int(e.int_("max_receive_count", 1, 1000) or 0),
            dlq_retention_seconds=int(e.int_("dlq_retention_seconds", 60, 1209600) or 0),
            purpose=str(e.str_("purpose", optional=True)))
    dlq_clash = {q.dlq_name for q in queues.values()} & {q.name for q in queues.values()}
    if dlq_clash:
        clash = sorted(dlq_clash)[0][len(prefix):]
        raise InventoryError(f"queues.{clash}: name clashes with a dead-letter queue")

    topics: dict[str, Topic] = {}
    for key, raw in data["topics"].items():
        _check_key("topics", key, prefix + key)
        e = _Entry(f"topics.{key}", "topic", raw)
        subs = []
        for i, s in enumerate(e.list_("subscriptions")):
            se = _Entry(f"topics.{key}.subscriptions[{i}]", "subscription", s)
            queue = str(se.str_("queue"))
            if queue not in queues:
                raise se.fail("queue", f"names no queue of this inventory (queues: {', '.join(queues)})")
            subs.append(Subscription(queue=queue, raw_message_delivery=se.bool_("raw_message_delivery")))
        if len({s.queue for s in subs}) != len(subs):
            raise e.fail("subscriptions", "a queue is subscribed twice")
        topics[key] = Topic(key=key, name=prefix + key, subscriptions=tuple(subs),
                            purpose=str(e.str_("purpose", optional=True)))

    secrets: dict[str, Secret] = {}
    for key, raw in data["secrets"].items():
        _check_key("secrets", key, prefix + key)
        e = _Entry(f"secrets.{key}", "secret", raw)
        desc = str(e.str_("description"))
        if not desc.strip():
            raise e.fail("description", "must say what the secret is for")
        secrets[key] = Secret(key=key, name=prefix + key, description=desc)

    if EVENTS_TOPIC not in topics:
        raise InventoryError(f"topics.{EVENTS_TOPIC}: missing; the clinical-gateway publishes to it")
    if MODEL_BUCKET not in buckets:
        raise InventoryError(f"buckets.{MODEL_BUCKET}: missing; model-serving loads from it")
    return Inventory(project=project, env=env, buckets=buckets, queues=queues, topics=topics,
                     secrets=secrets, source=source)


def load_inventory(path: str | Path | None = None, env: str = "dev") -> Inventory:
    """Read and validate the inventory file (default: ``terraform/inventory.tfvars.json``)."""
    p = Path(path) if path is not None else default_inventory_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InventoryError(f"inventory file {p} does not exist") from e
    except json.JSONDecodeError as e:
        raise InventoryError(f"inventory file {p} is not valid JSON: line {e.lineno}: {e.msg}") from e
    return parse_inventory(data, env=env, source=p)


def service_resources(env: str = "dev", *, endpoint: str | None = None, inventory: Inventory | None = None,
                      account_id: str = "000000000000", region: str = REGION) -> dict[str, str]:
    """What the local target hands the services (keys are the environment variables of
    docs/CONTRACTS.md): the observations topic ARN, its queue URL and the bucket names.

    ``endpoint`` is the LocalStack URL; queue URLs are path-style under it, which LocalStack
    accepts whatever its hostname strategy. Without it, URLs use the AWS SQS form.
    """
    inv = inventory or load_inventory(env=env)
    queue = inv.queues.get(EVENTS_TOPIC)
    q_base = endpoint.rstrip("/") if endpoint else f"https://sqs.{region}.amazonaws.com"
    out = {
        "CLINOPS_EVENTS_TOPIC_ARN": f"arn:aws:sns:{region}:{account_id}:{inv.topics[EVENTS_TOPIC].name}",
        "CLINOPS_MODEL_BUCKET": inv.buckets[MODEL_BUCKET].name,
        "CLINOPS_MODEL_KEY": MODEL_KEY,
        "AWS_DEFAULT_REGION": region,
    }
    if queue is not None:
        out["CLINOPS_OBSERVATIONS_QUEUE_URL"] = f"{q_base}/{account_id}/{queue.name}"
    for key, b in inv.buckets.items():
        out[f"CLINOPS_BUCKET_{key.upper().replace('-', '_')}"] = b.name
    if endpoint:
        out["AWS_ENDPOINT_URL"] = endpoint
    return out
