"""Drift: what is live against what the inventory file says, with the one normalisation apply shares.

:func:`_desired` (what the file asks for) and :func:`_observe` (what AWS / LocalStack holds) give
the same shape, so "what apply would change" and "what drift reports" cannot disagree;
:func:`drift` lists every missing, unexpected and mismatched setting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import Settings
from ..exceptions import InventoryError
from .model import DLQ_SUFFIX, REGION, SNS_KMS_KEY, Inventory, LifecycleRule, Topic

__all__ = [
    "Clients",
    "Difference",
    "drift",
    "make_clients",
]


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
