"""Apply: create and update what the inventory file asks for, idempotently; provision picks the path.

``apply_inventory`` brings AWS / LocalStack to the file (second run: no change); ``provision``
runs Terraform when it can and boto3 otherwise, then reports drift.
"""

from __future__ import annotations

import json
import secrets as _secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import Settings
from ..exceptions import InventoryError
from .drift import (
    _PAB,
    Clients,
    Difference,
    _aws,
    _desired,
    _observe,
    _queue_arn,
    _queue_url,
    _rule_to_live,
    _sub_name,
    _topic_arn,
    drift,
    make_clients,
)
from .model import SNS_KMS_KEY, Bucket, Inventory, Progress, default_inventory_path, load_inventory

__all__ = [
    "ApplyReport",
    "Change",
    "ProvisionReport",
    "apply_inventory",
    "provision",
    "read_secret",
]


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
