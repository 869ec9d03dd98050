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
import secrets as _secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import Settings, project_root
from ..exceptions import InventoryError

__all__ = [
    "EVENTS_TOPIC",
    "MODEL_BUCKET",
    "ApplyReport",
    "Bucket",
    "Change",
    "Clients",
    "Difference",
    "Inventory",
    "LifecycleRule",
    "ProvisionReport",
    "Queue",
    "Secret",
    "Subscription",
    "Topic",
    "apply_inventory",
    "default_inventory_path",
    "drift",
    "inventory_from_cli",
    "load_inventory",
    "make_clients",
    "parse_inventory",
    "provision",
    "read_secret",
    "service_resources",
]

#: Inventory keys the services are wired to (validated to exist by :func:`parse_inventory`).
EVENTS_TOPIC = "observations"
MODEL_BUCKET = "model-artifacts"
MODEL_KEY = "models/risk-model/current/model.joblib"
REGION = "us-east-1"
DLQ_SUFFIX = "-dlq"
SNS_KMS_KEY = "alias/aws/sns"
ENVIRONMENTS = ("dev", "staging", "prod")
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
    if not isinstance(days, dict) or set(days) != set(ENVIRONMENTS):
        raise e.fail("retention_days", f"must give days for each of {', '.join(ENVIRONMENTS)}")
    for name, value in days.items():
        if not isinstance(value, int) or isinstance(value, bool) or not (1 <= value <= 36500):
            raise InventoryError(
                f"{where}.retention_days.{name}: must be an integer in 1..36500, got {value!r}")
    return mode, int(days[env])


def parse_inventory(data: Any, env: str = "dev", source: Path | None = None) -> Inventory:
    """Validate an already-parsed inventory document (what :func:`load_inventory` reads)."""
    if env not in ENVIRONMENTS:
        raise InventoryError(f"environment {env!r} unknown; known: {', '.join(ENVIRONMENTS)}")
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


# -- clients -------------------------------------------------------------------------------------
@dataclass
class Clients:
    """The boto3 clients the inventory needs. Tests build their own; :func:`make_clients`
    is the one place that builds them from :class:`Settings`."""

    s3: Any
    sqs: Any
    sns: Any
    secretsmanager: Any
    sts: Any = None
    region: str = REGION
    _account: str | None = field(default=None, repr=False)

    @classmethod
    def from_session(cls, session: Any, endpoint_url: str | None, region: str = REGION) -> Clients:
        def mk(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint_url, region_name=region)

        return cls(s3=mk("s3"), sqs=mk("sqs"), sns=mk("sns"), secretsmanager=mk("secretsmanager"),
                   sts=mk("sts"), region=region)

    def account_id(self) -> str:
        if self._account is None:
            if self.sts is None:
                self._account = "000000000000"
            else:
                with _aws("sts", "caller identity"):
                    self._account = str(self.sts.get_caller_identity()["Account"])
        return self._account


def make_clients(settings: Settings, session: Any | None = None) -> Clients:
    """Clients for LocalStack at ``settings.localstack_url`` with its test credentials."""
    import boto3

    # LocalStack's fixed test credentials, not a secret.
    sess = session or boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test",  # noqa: S106
                                            region_name=REGION)
    return Clients.from_session(sess, settings.localstack_url)


@contextmanager
def _aws(kind: str, name: str) -> Iterator[None]:
    """The one place boto3/botocore errors become :class:`InventoryError` naming the resource."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as e:
        err = e.response.get("Error", {})
        raise InventoryError(f"{kind} {name}: {e.operation_name} failed: {err.get('Code')}: "
                             f"{err.get('Message')}") from e
    except BotoCoreError as e:
        raise InventoryError(f"{kind} {name}: {e}") from e


def _code(e: Exception) -> str:
    resp = getattr(e, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", ""))


# -- desired vs observed state --------------------------------------------------------------------
Kind = Literal["bucket", "queue", "topic", "subscription", "secret"]
ResourceId = tuple[str, str]  # (kind, name)
_PAB = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True}


def _sub_name(topic: Topic, queue_name: str) -> str:
    return f"{topic.name} -> {queue_name}"


def _topic_arn(inv: Inventory, clients: Clients, topic_key: str) -> str:
    return f"arn:aws:sns:{clients.region}:{clients.account_id()}:{inv.topics[topic_key].name}"


def _queue_arn(clients: Clients, name: str) -> str:
    return f"arn:aws:sqs:{clients.region}:{clients.account_id()}:{name}"


def _desired(inv: Inventory, clients: Clients) -> dict[ResourceId, dict[str, Any]]:
    """Every resource the inventory declares, with the settings drift compares."""
    out: dict[ResourceId, dict[str, Any]] = {}
    for b in inv.buckets.values():
        out[("bucket", b.name)] = {
            "versioning": "Enabled" if b.versioning else "Suspended",
            "sse_algorithm": b.sse_algorithm,
            "public_access_block": dict(_PAB),
            "lifecycle_rules": sorted((r.normalised() for r in b.lifecycle_rules), key=lambda r: r["id"]),
            "object_lock": ({"mode": b.object_lock_mode, "days": b.object_lock_days}
                            if b.object_lock_mode else None),
        }
    publishers: dict[str, list[str]] = {}
    for t in inv.topics.values():
        for s in t.subscriptions:
            publishers.setdefault(s.queue, []).append(_topic_arn(inv, clients, t.key))
    for q in inv.queues.values():
        out[("queue", q.dlq_name)] = {"message_retention_seconds": q.dlq_retention_seconds, "sse": True,
                                      "redrive": None, "sns_publishers": []}
        out[("queue", q.name)] = {
            "visibility_timeout_seconds": q.visibility_timeout_seconds,
            "message_retention_seconds": q.message_retention_seconds,
            "sse": True,
            "redrive": {"dead_letter_queue": q.dlq_name, "max_receive_count": q.max_receive_count},
            "sns_publishers": sorted(publishers.get(q.key, [])),
        }
    for t in inv.topics.values():
        out[("topic", t.name)] = {"kms_master_key_id": SNS_KMS_KEY}
        for s in t.subscriptions:
            out[("subscription", _sub_name(t, inv.queues[s.queue].name))] = {
                "raw_message_delivery": s.raw_message_delivery}
    for sec in inv.secrets.values():
        out[("secret", sec.name)] = {"description": sec.description, "has_value": True}
    return out


def _observe_bucket(clients: Clients, name: str) -> dict[str, Any]:
    s3 = clients.s3
    with _aws("bucket", name):
        status = s3.get_bucket_versioning(Bucket=name).get("Status", "Disabled")
    enc = _unless_missing(name, "ServerSideEncryptionConfigurationNotFoundError",
                          lambda: s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"])
    rules = (enc or {}).get("Rules") or []
    sse = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] if rules else None
    pab = _unless_missing(name, "NoSuchPublicAccessBlockConfiguration",
                          lambda: s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"])
    live_rules = _unless_missing(name, "NoSuchLifecycleConfiguration",
                                 lambda: s3.get_bucket_lifecycle_configuration(Bucket=name).get("Rules", []))
    pab, live_rules = dict(pab or {}), live_rules or []
    lock = _unless_missing(name, "ObjectLockConfigurationNotFoundError",
                           lambda: s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"])
    retention = ((lock or {}).get("Rule") or {}).get("DefaultRetention") or {}
    days = retention.get("Days", retention.get("Years", 0) * 365 if "Years" in retention else None)
    return {"versioning": status, "sse_algorithm": sse,
            "public_access_block": {k: bool(pab.get(k, False)) for k in _PAB},
            "lifecycle_rules": sorted((_rule_from_live(r) for r in live_rules), key=lambda r: r["id"]),
            "object_lock": {"mode": retention.get("Mode"), "days": days}
            if (lock or {}).get("ObjectLockEnabled") == "Enabled" else None}


def _unless_missing(bucket: str, missing_code: str, call: Callable[[], Any]) -> Any:
    """``call()``, or None when S3 answers ``missing_code`` (that setting was never applied);
    any other error becomes an :class:`InventoryError` naming the bucket."""
    try:
        return call()
    except Exception as e:
        if _code(e) != missing_code:
            with _aws("bucket", bucket):
                raise
        return None


def _rule_from_live(r: dict[str, Any]) -> dict[str, Any]:
    flt = r.get("Filter") or {}
    prefix = flt.get("Prefix", r.get("Prefix", "")) if isinstance(flt, dict) else ""
    out: dict[str, Any] = {"id": r.get("ID", ""), "prefix": prefix or ""}
    if r.get("Status") != "Enabled":
        out["status"] = r.get("Status")
    if "Days" in (r.get("Expiration") or {}):
        out["expiration_days"] = r["Expiration"]["Days"]
    if "NoncurrentDays" in (r.get("NoncurrentVersionExpiration") or {}):
        out["noncurrent_expiration_days"] = r["NoncurrentVersionExpiration"]["NoncurrentDays"]
    for t in r.get("Transitions") or []:
        out["transition_days"], out["storage_class"] = t.get("Days"), t.get("StorageClass")
    for t in r.get("NoncurrentVersionTransitions") or []:
        out["noncurrent_transition_days"] = t.get("NoncurrentDays")
        out["noncurrent_storage_class"] = t.get("StorageClass")
    if "DaysAfterInitiation" in (r.get("AbortIncompleteMultipartUpload") or {}):
        out["abort_multipart_days"] = r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
    return out


def _rule_to_live(r: LifecycleRule) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": r.id, "Filter": {"Prefix": r.prefix}, "Status": "Enabled"}
    if r.expiration_days is not None:
        out["Expiration"] = {"Days": r.expiration_days}
    if r.noncurrent_expiration_days is not None:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": r.noncurrent_expiration_days}
    if r.transition_days is not None:
        out["Transitions"] = [{"Days": r.transition_days, "StorageClass": r.storage_class}]
    if r.noncurrent_transition_days is not None:
        out["NoncurrentVersionTransitions"] = [{"NoncurrentDays": r.noncurrent_transition_days,
                                                "StorageClass": r.noncurrent_storage_class}]
    if r.abort_multipart_days is not None:
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": r.abort_multipart_days}
    return out


def _queue_url(clients: Clients, name: str) -> str | None:
    try:
        return str(clients.sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except Exception as e:
        if "NonExistentQueue" in _code(e) or _code(e) == "QueueDoesNotExist":
            return None
        with _aws("queue", name):
            raise
    return None  # pragma: no cover


def _observe_queue(clients: Clients, url: str, name: str, with_visibility: bool) -> dict[str, Any]:
    with _aws("queue", name):
        attrs = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = None
    if attrs.get("RedrivePolicy"):
        rp = json.loads(attrs["RedrivePolicy"])
        redrive = {"dead_letter_queue": str(rp.get("deadLetterTargetArn", "")).rsplit(":", 1)[-1],
                   "max_receive_count": int(rp.get("maxReceiveCount", 0))}
    publishers: list[str] = []
    if attrs.get("Policy"):
        for st in json.loads(attrs["Policy"]).get("Statement", []):
            src = ((st.get("Condition") or {}).get("ArnEquals") or {}).get("aws:SourceArn")
            if st.get("Effect") == "Allow" and src:
                publishers.extend([src] if isinstance(src, str) else src)
    out: dict[str, Any] = {
        "message_retention_seconds": int(attrs.get("MessageRetentionPeriod", 0)),
        "sse": attrs.get("SqsManagedSseEnabled") == "true" or bool(attrs.get("KmsMasterKeyId")),
        "redrive": redrive,
        "sns_publishers": sorted(publishers),
    }
    if with_visibility:
        out["visibility_timeout_seconds"] = int(attrs.get("VisibilityTimeout", 0))
    return out


def _list_topics(clients: Clients) -> list[str]:
    arns: list[str] = []
    with _aws("topic", "*"):
        for page in clients.sns.get_paginator("list_topics").paginate():
            arns.extend(t["TopicArn"] for t in page.get("Topics", []))
    return arns


def _subscriptions(clients: Clients, topic_arn: str, topic_name: str) -> list[dict[str, Any]]:
    subs: list[dict[str, Any]] = []
    with _aws("topic", topic_name):
        for page in clients.sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
            subs.extend(page.get("Subscriptions", []))
    return subs


def _observe(inv: Inventory, clients: Clients) -> dict[ResourceId, dict[str, Any]]:
    """Every live resource whose name carries the inventory's prefix, in :func:`_desired`'s shape."""
    live: dict[ResourceId, dict[str, Any]] = {}
    prefix = inv.prefix
    with _aws("bucket", prefix + "*"):
        names = [b["Name"] for b in clients.s3.list_buckets().get("Buckets", [])]
    for name in names:
        if name.startswith(prefix):
            live[("bucket", name)] = _observe_bucket(clients, name)

    urls: list[str] = []
    with _aws("queue", prefix + "*"):
        for page in clients.sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix):
            urls.extend(page.get("QueueUrls", []))
    for url in urls:
        name = url.rstrip("/").rsplit("/", 1)[-1]
        is_dlq = name.endswith(DLQ_SUFFIX)
        live[("queue", name)] = _observe_queue(clients, url, name, with_visibility=not is_dlq)

    queue_by_arn = {_queue_arn(clients, n): n for (k, n) in live if k == "queue"}
    for arn in _list_topics(clients):
        name = arn.rsplit(":", 1)[-1]
        if not name.startswith(prefix):
            continue
        with _aws("topic", name):
            attrs = clients.sns.get_topic_attributes(TopicArn=arn)["Attributes"]
        live[("topic", name)] = {"kms_master_key_id": attrs.get("KmsMasterKeyId") or None}
        for sub in _subscriptions(clients, arn, name):
            if not str(sub.get("SubscriptionArn", "")).startswith("arn:"):
                continue  # pending confirmation: not a working subscription
            target = queue_by_arn.get(sub.get("Endpoint", ""), sub.get("Endpoint", ""))
            target = target.rsplit(":", 1)[-1]
            with _aws("subscription", f"{name} -> {target}"):
                sattrs = clients.sns.get_subscription_attributes(
                    SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
            live[("subscription", f"{name} -> {target}")] = {
                "raw_message_delivery": sattrs.get("RawMessageDelivery") == "true",
                "_arn": sub["SubscriptionArn"]}

    with _aws("secret", prefix + "*"):
        pages = clients.secretsmanager.get_paginator("list_secrets").paginate(
            Filters=[{"Key": "name", "Values": [prefix]}])
        secret_list = [s for page in pages for s in page.get("SecretList", [])]
    for s in secret_list:
        if not s["Name"].startswith(prefix) or s.get("DeletedDate"):
            continue
        stages = s.get("SecretVersionsToStages") or {}
        live[("secret", s["Name"])] = {
            "description": s.get("Description", ""),
            "has_value": any("AWSCURRENT" in v for v in stages.values())}
    return live


# -- drift ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """One way the live resources differ from the inventory."""

    kind: str
    name: str
    problem: Literal["missing", "unexpected", "mismatch"]
    field: str = ""
    expected: Any = None
    actual: Any = None

    def __str__(self) -> str:
        if self.problem == "missing":
            return f"{self.kind} {self.name}: missing (declared in the inventory, not live)"
        if self.problem == "unexpected":
            return f"{self.kind} {self.name}: unexpected (live with the project's prefix, not in the file)"
        return f"{self.kind} {self.name}: {self.field} is {self.actual!r}, inventory says {self.expected!r}"

    def as_row(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "problem": self.problem, "field": self.field,
                "expected": json.dumps(self.expected, default=str) if self.problem == "mismatch" else "",
                "actual": json.dumps(self.actual, default=str) if self.problem == "mismatch" else ""}


def _compare(desired: dict[ResourceId, dict[str, Any]],
             live: dict[ResourceId, dict[str, Any]]) -> list[Difference]:
    diffs: list[Difference] = []
    for rid, want in desired.items():
        kind, name = rid
        have = live.get(rid)
        if have is None:
            diffs.append(Difference(kind, name, "missing"))
            continue
        for f, v in want.items():
            if have.get(f) != v:
                diffs.append(Difference(kind, name, "mismatch", f, v, have.get(f)))
    for rid in live:
        if rid not in desired:
            diffs.append(Difference(rid[0], rid[1], "unexpected"))
    order = {"bucket": 0, "queue": 1, "topic": 2, "subscription": 3, "secret": 4}
    return sorted(diffs, key=lambda d: (order.get(d.kind, 9), d.name, d.field))


def drift(inventory: Inventory, clients: Clients) -> list[Difference]:
    """Every difference between the live resources and the inventory; empty means in sync."""
    return _compare(_desired(inventory, clients), _observe(inventory, clients))


# -- apply --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: Literal["created", "updated", "unchanged"]
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        extra = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action:9} {self.kind} {self.name}{extra}"


@dataclass
class ApplyReport:
    """What an apply did, resource by resource; ``changed`` is False when nothing had to be done."""

    changes: list[Change] = field(default_factory=list)
    unexpected: list[Difference] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def summary(self) -> str:
        s = (f"{self.count('created')} created, {self.count('updated')} updated, "
             f"{self.count('unchanged')} unchanged")
        if self.unexpected:
            s += f"; {len(self.unexpected)} unexpected resource(s) left in place"
        return s if self.changed else s + " (no change)"


def _queue_policy(queue_arn: str, topic_arns: list[str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": f"sns-{arn.rsplit(':', 1)[-1]}", "Effect": "Allow",
         "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": queue_arn,
         "Condition": {"ArnEquals": {"aws:SourceArn": arn}}}
        for arn in topic_arns]})


def _apply_bucket(clients: Clients, b: Bucket, want: dict[str, Any], have: dict[str, Any] | None) -> Change:
    s3 = clients.s3
    with _aws("bucket", b.name):
        if have is None:
            # us-east-1 takes no LocationConstraint; Object Lock is best enabled at creation
            s3.create_bucket(Bucket=b.name, ObjectLockEnabledForBucket=b.object_lock_mode is not None)
            have = {}
        todo = [f for f, v in want.items() if have.get(f) != v]
        if "versioning" in todo:
            s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": want["versioning"]})
        if "sse_algorithm" in todo:
            s3.put_bucket_encryption(Bucket=b.name, ServerSideEncryptionConfiguration={"Rules": [{
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": b.sse_algorithm},
                "BucketKeyEnabled": b.sse_algorithm == "aws:kms"}]})
        if "public_access_block" in todo:
            s3.put_public_access_block(Bucket=b.name, PublicAccessBlockConfiguration=dict(_PAB))
        if "lifecycle_rules" in todo:
            if b.lifecycle_rules:
                s3.put_bucket_lifecycle_configuration(Bucket=b.name, LifecycleConfiguration={
                    "Rules": [_rule_to_live(r) for r in b.lifecycle_rules]})
            else:
                s3.delete_bucket_lifecycle(Bucket=b.name)
        if "object_lock" in todo and b.object_lock_mode is not None:
            # compliance mode cannot be removed or shortened (AWS refuses); the drift shows it
            s3.put_object_lock_configuration(Bucket=b.name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": b.object_lock_mode, "Days": b.object_lock_days}}})
    return _change("bucket", b.name, not have, todo)


def _change(kind: str, name: str, created: bool, todo: list[str]) -> Change:
    if created:
        return Change(kind, name, "created")
    return Change(kind, name, "updated" if todo else "unchanged", tuple(todo))


def _apply_queue(clients: Clients, name: str, want: dict[str, Any], have: dict[str, Any] | None) -> Change:
    attrs: dict[str, str] = {"MessageRetentionPeriod": str(want["message_retention_seconds"]),
                             "SqsManagedSseEnabled": "true"}
    if "visibility_timeout_seconds" in want:
        attrs["VisibilityTimeout"] = str(want["visibility_timeout_seconds"])
    if want["redrive"]:
        attrs["RedrivePolicy"] = json.dumps({
            "deadLetterTargetArn": _queue_arn(clients, want["redrive"]["dead_letter_queue"]),
            "maxReceiveCount": want["redrive"]["max_receive_count"]})
    if want["sns_publishers"]:
        attrs["Policy"] = _queue_policy(_queue_arn(clients, name), want["sns_publishers"])
    with _aws("queue", name):
        if have is None:
            clients.sqs.create_queue(QueueName=name, Attributes=attrs)
            return Change("queue", name, "created")
        todo = [f for f, v in want.items() if have.get(f) != v]
        if todo:
            url = _queue_url(clients, name)
            if not want["redrive"] and have.get("redrive"):
                attrs["RedrivePolicy"] = ""
            if not want["sns_publishers"] and have.get("sns_publishers"):
                attrs["Policy"] = ""
            clients.sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
    return _change("queue", name, False, todo)


def apply_inventory(inventory: Inventory, clients: Clients, progress: Progress | None = None) -> ApplyReport:
    """Create what is missing and correct what differs; a second apply reports no change.

    Unexpected resources (the project's prefix, not in the file) are reported, never deleted:
    removing live data is a decision for a person, drift shows it.
    """
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    desired = _desired(inventory, clients)
    live = _observe(inventory, clients)
    report = ApplyReport()

    for b in inventory.buckets.values():
        rid = ("bucket", b.name)
        report.changes.append(_apply_bucket(clients, b, desired[rid], live.get(rid)))
        say(str(report.changes[-1]))
    for t in inventory.topics.values():  # topics first: queue policies name their ARNs
        rid = ("topic", t.name)
        with _aws("topic", t.name):
            if live.get(rid) is None:
                clients.sns.create_topic(Name=t.name, Attributes={"KmsMasterKeyId": SNS_KMS_KEY})
                report.changes.append(Change("topic", t.name, "created"))
            elif live[rid] != desired[rid]:
                clients.sns.set_topic_attributes(TopicArn=_topic_arn(inventory, clients, t.key),
                                                 AttributeName="KmsMasterKeyId", AttributeValue=SNS_KMS_KEY)
                report.changes.append(Change("topic", t.name, "updated", ("kms_master_key_id",)))
            else:
                report.changes.append(Change("topic", t.name, "unchanged"))
        say(str(report.changes[-1]))
    for q in inventory.queues.values():  # dead-letter queue before the queue that redrives to it
        for name in (q.dlq_name, q.name):
            rid = ("queue", name)
            report.changes.append(_apply_queue(clients, name, desired[rid], live.get(rid)))
            say(str(report.changes[-1]))
    for t in inventory.topics.values():
        topic_arn = _topic_arn(inventory, clients, t.key)
        for s in t.subscriptions:
            qname = inventory.queues[s.queue].name
            rid = ("subscription", _sub_name(t, qname))
            raw = "true" if s.raw_message_delivery else "false"
            with _aws("subscription", rid[1]):
                have = live.get(rid)
                if have is None:
                    clients.sns.subscribe(TopicArn=topic_arn, Protocol="sqs",
                                          Endpoint=_queue_arn(clients, qname),
                                          Attributes={"RawMessageDelivery": raw}, ReturnSubscriptionArn=True)
                    report.changes.append(Change("subscription", rid[1], "created"))
                elif have["raw_message_delivery"] != s.raw_message_delivery:
                    clients.sns.set_subscription_attributes(SubscriptionArn=have["_arn"],
                                                            AttributeName="RawMessageDelivery",
                                                            AttributeValue=raw)
                    report.changes.append(
                        Change("subscription", rid[1], "updated", ("raw_message_delivery",)))
                else:
                    report.changes.append(Change("subscription", rid[1], "unchanged"))
            say(str(report.changes[-1]))
    for sec in inventory.secrets.values():
        rid = ("secret", sec.name)
        have = live.get(rid)
        with _aws("secret", sec.name):
            if have is None:
                clients.secretsmanager.create_secret(Name=sec.name, Description=sec.description,
                                                     SecretString=_secrets.token_urlsafe(32))
                report.changes.append(Change("secret", sec.name, "created"))
            else:
                todo = [f for f, v in desired[rid].items() if have.get(f) != v]
                if "description" in todo:
                    clients.secretsmanager.update_secret(SecretId=sec.name, Description=sec.description)
                if "has_value" in todo:
                    clients.secretsmanager.put_secret_value(SecretId=sec.name,
                                                            SecretString=_secrets.token_urlsafe(32))
                report.changes.append(_change("secret", sec.name, False, todo))
        say(str(report.changes[-1]))

    report.unexpected = [Difference(k, n, "unexpected") for (k, n) in live if (k, n) not in desired]
    report.seconds = time.monotonic() - t0
    return report


def read_secret(inventory: Inventory, clients: Clients, key: str) -> str:
    """A secret's current value, already registered with the evidence secret gate."""
    from ..runs import record

    if key not in inventory.secrets:
        raise InventoryError(f"secrets.{key}: not in the inventory (secrets: {', '.join(inventory.secrets)})")
    name = inventory.secrets[key].name
    with _aws("secret", name):
        value = str(clients.secretsmanager.get_secret_value(SecretId=name)["SecretString"])
    return record.secret(value)


# -- provisioning -------------------------------------------------------------------------------
@dataclass
class ProvisionReport:
    """How the inventory was provisioned and what was live afterwards."""

    method: Literal["terraform", "boto3"]
    endpoint: str
    environment: str
    apply: ApplyReport | None = None
    terraform_log: str = ""
    drift: list[Difference] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0

    @property
    def in_sync(self) -> bool:
        return not [d for d in self.drift if d.problem != "unexpected"]


def provision(settings: Settings, progress: Progress | None = None, *, clients: Clients | None = None,
              inventory: Inventory | None = None, method: Literal["auto", "terraform", "boto3"] = "auto",
              terraform_bin: str | None = None) -> ProvisionReport:
    """Apply the inventory to LocalStack and say how in ``ProvisionReport.method``.

    ``auto``: Terraform when a ``terraform`` binary is on PATH and ``terraform init`` succeeds
    (it needs the AWS and random providers: registry access or a provider mirror); otherwise
    boto3, with the reason in ``note``. ``terraform`` / ``boto3`` force one path and fail
    rather than fall back. Drift is measured after either path, through boto3, so both are
    held to the same inventory.
    """
    from .terraform import TerraformInitError, terraform_apply, terraform_init

    say = progress or (lambda _m: None)
    if method not in ("auto", "terraform", "boto3"):
        raise InventoryError(f"provision method {method!r} unknown; use auto, terraform or boto3")
    t0 = time.monotonic()
    inv = inventory or load_inventory(env=settings.environment)
    cl = clients or make_clients(settings)
    tf = terraform_bin or shutil.which("terraform")
    report: ProvisionReport | None = None
    note = "boto3 asked for"
    if method == "terraform" and tf is None:
        raise InventoryError("provision method 'terraform' asked for, but no terraform binary is on PATH")
    if method != "boto3" and tf is not None:
        say(f"terraform: applying {inv.source or default_inventory_path()} to {settings.localstack_url}")
        try:
            log = terraform_init(settings, inv, tf, progress=say)
        except TerraformInitError as e:
            if method == "terraform":
                raise
            note = f"terraform is on PATH but init failed, so boto3 was used: {str(e).splitlines()[0]}"
            say(note)
        else:
            log += terraform_apply(settings, inv, tf, progress=say)
            report = ProvisionReport("terraform", settings.localstack_url, inv.env, terraform_log=log,
                                     note=f"terraform binary: {tf}")
    elif method == "auto":
        note = "terraform is not on PATH"
    if report is None:
        say(f"boto3: applying the inventory to {settings.localstack_url} ({note})")
        applied = apply_inventory(inv, cl, say)
        report = ProvisionReport("boto3", settings.localstack_url, inv.env, apply=applied, note=note)
    report.drift = drift(inv, cl)
    report.seconds = time.monotonic() - t0
    say(f"{report.method}: done, {len(report.drift)} difference(s) after apply")
    return report


def inventory_from_cli(action: str, settings: Settings) -> int:
    """``clinops inventory apply|drift|show`` (called by ``platform_cli.inventory_from_cli``)."""
    inv = load_inventory(env=settings.environment)
    if action == "show":
        for b in inv.buckets.values():
            print(f"bucket  {b.name}  versioning={b.versioning} sse={b.sse_algorithm} "
                  f"rules={len(b.lifecycle_rules)}")
        for q in inv.queues.values():
            print(f"queue   {q.name}  dlq={q.dlq_name} maxReceiveCount={q.max_receive_count}")
        for t in inv.topics.values():
            print(f"topic   {t.name}  -> {', '.join(inv.queues[s.queue].name for s in t.subscriptions)}")
        for s in inv.secrets.values():
            print(f"secret  {s.name}  {s.description}")
        return 0
    if action == "apply":
        report = provision(settings, progress=print)
        print(f"method: {report.method}; " + (report.apply.summary() if report.apply else "terraform apply"))
        for d in report.drift:
            print(f"drift: {d}")
        return 0 if report.in_sync else 1
    if action == "drift":
        diffs = drift(inv, make_clients(settings))
        for d in diffs:
            print(d)
        print(f"{len(diffs)} difference(s)")
        return 0 if not diffs else 1
    raise InventoryError(f"inventory action {action!r} unknown; use apply, drift or show")
