"""The AWS inventory against a REAL LocalStack 4.12.0 (the session's shared local platform).

LocalStack is the local target's own component (``clinops_lib.targets.local.components.LocalStack``,
which carries the Python 3.11 KMS fix), started once per test session with the shared platform's
Level 0 (``local_platform`` in conftest.py). Each test uses its own project
name, so its resources carry their own prefix and tests do not see each other's.
Live state is checked with plain boto3 calls here, not through the library's own
observation code, so a bug there cannot hide itself.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from conftest import SharedPlatform
from ports import PortBlock

from clinops_lib.config import Settings
from clinops_lib.exceptions import InventoryError
from clinops_lib.inventory import (
    Clients,
    apply_inventory,
    drift,
    load_inventory,
    make_clients,
    parse_inventory,
    provision,
    read_secret,
    service_resources,
)
from clinops_lib.inventory import model as inv_mod
from clinops_lib.inventory.terraform import TerraformInitError, terraform_init

ROOT = Path(__file__).resolve().parent.parent
INVENTORY_FILE = ROOT / "terraform" / "inventory.tfvars.json"

pytestmark = [pytest.mark.component, pytest.mark.timeout(600)]


def _raw() -> dict[str, Any]:
    return json.loads(INVENTORY_FILE.read_text())


def _inventory(project: str, env: str = "dev", mutate: Any = None) -> inv_mod.Inventory:
    data = _raw()
    data["project"] = project
    if mutate:
        mutate(data)
    return parse_inventory(data, env=env)


# -- validation (no LocalStack) ----------------------------------------------------------------
def test_default_inventory_follows_the_storage_design() -> None:
    inv = load_inventory()
    assert inv.source == INVENTORY_FILE
    assert set(inv.buckets) >= {
        "mlflow-artifacts",
        "model-artifacts",
        "airflow-logs",
        "feature-store",
        "backups",
    }
    assert all(
        name.startswith("clinops-dev-")
        for name in [b.name for b in inv.buckets.values()]
        + [q.name for q in inv.queues.values()]
        + [t.name for t in inv.topics.values()]
        + [s.name for s in inv.secrets.values()]
    )
    logs = inv.buckets["airflow-logs"]
    assert [r.expiration_days for r in logs.lifecycle_rules] == [30]
    assert all(b.versioning and b.sse_algorithm == "aws:kms" for b in inv.buckets.values())
    assert all(q.max_receive_count >= 1 for q in inv.queues.values())
    assert inv.topics["observations"].subscriptions
    # staging gets its own names from the same file
    assert load_inventory(env="staging").buckets["backups"].name == "clinops-staging-backups"


def test_inventory_file_holds_no_secret_values() -> None:
    for key, entry in _raw()["secrets"].items():
        assert set(entry) == {"description"}, f"secret {key} must carry a description only"


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (
            lambda d: d["buckets"]["airflow-logs"]["lifecycle_rules"][0].__setitem__("expiration_days", -1),
            "buckets.airflow-logs.lifecycle_rules[0].expiration_days",
        ),
        (lambda d: d["buckets"]["backups"].__setitem__("encryption", "on"), "buckets.backups.encryption"),
        (lambda d: d["buckets"]["backups"].__setitem__("versioning", False), "buckets.backups.versioning"),
        (
            lambda d: d["buckets"]["backups"].__setitem__("sse_algorithm", "rot13"),
            "buckets.backups.sse_algorithm",
        ),
        (
            lambda d: d["buckets"]["feature-store"]["lifecycle_rules"][0].pop("storage_class"),
            "buckets.feature-store.lifecycle_rules[0].storage_class",
        ),
        (
            lambda d: d["queues"]["observations"].__setitem__("max_receive_count", 0),
            "queues.observations.max_receive_count",
        ),
        (
            lambda d: d["queues"]["feature-jobs"].pop("dlq_retention_seconds"),
            "queues.feature-jobs.dlq_retention_seconds",
        ),
        (
            lambda d: d["topics"]["observations"]["subscriptions"][1].__setitem__("queue", "nope"),
            "topics.observations.subscriptions[1].queue",
        ),
        (
            lambda d: d["secrets"]["redis-password"].__setitem__("value", "hunter2"),
            "secrets.redis-password.value",
        ),
        (lambda d: d["buckets"].__setitem__("Bad_Name", d["buckets"]["backups"]), "buckets.Bad_Name"),
        (lambda d: d["topics"].pop("observations"), "topics.observations"),
    ],
)
def test_bad_entry_is_named_with_its_field(mutate: Any, where: str) -> None:
    with pytest.raises(InventoryError) as err:
        _inventory("clinops", mutate=mutate)
    assert str(err.value).startswith(where + ":"), str(err.value)


def test_unreadable_inventory_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"project": "clinops",')
    with pytest.raises(InventoryError, match=r"broken\.json is not valid JSON"):
        load_inventory(broken)
    with pytest.raises(InventoryError, match="environment 'qa' unknown"):
        load_inventory(env="qa")


def test_service_resources_wire_the_gateway_and_serving() -> None:
    res = service_resources("dev", endpoint="http://127.0.0.1:24002")
    assert res["CLINOPS_EVENTS_TOPIC_ARN"] == "arn:aws:sns:us-east-1:000000000000:clinops-dev-observations"
    assert res["CLINOPS_MODEL_BUCKET"] == "clinops-dev-model-artifacts"
    assert (
        res["CLINOPS_OBSERVATIONS_QUEUE_URL"]
        == "http://127.0.0.1:24002/000000000000/clinops-dev-observations"
    )
    assert res["AWS_ENDPOINT_URL"] == "http://127.0.0.1:24002"
    prod = service_resources("prod")
    assert prod["CLINOPS_MODEL_BUCKET"] == "clinops-prod-model-artifacts"
    assert prod["CLINOPS_OBSERVATIONS_QUEUE_URL"].startswith("https://sqs.us-east-1.amazonaws.com/")
    assert "AWS_ENDPOINT_URL" not in prod


# -- a real LocalStack ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def settings(local_platform: Callable[[Iterable[int]], SharedPlatform]) -> Settings:
    """The LocalStack of the session's one local platform (Level 0)."""
    return local_platform([0]).settings


@pytest.fixture(scope="module")
def clients(settings: Settings) -> Clients:
    return make_clients(settings)


def _client(settings: Settings, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=settings.localstack_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _queue_attrs(sqs: Any, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return dict(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])


def _secret_values(settings: Settings, inv: inv_mod.Inventory) -> dict[str, str]:
    sm = _client(settings, "secretsmanager")
    return {k: sm.get_secret_value(SecretId=s.name)["SecretString"] for k, s in inv.secrets.items()}


def _names_with_prefix(settings: Settings, prefix: str) -> list[str]:
    s3, sqs, sns, sm = (_client(settings, x) for x in ("s3", "sqs", "sns", "secretsmanager"))
    names = [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(prefix)]
    names += sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    names += [
        t["TopicArn"]
        for t in sns.list_topics()["Topics"]
        if t["TopicArn"].rsplit(":", 1)[-1].startswith(prefix)
    ]
    names += [s["Name"] for s in sm.list_secrets()["SecretList"] if s["Name"].startswith(prefix)]
    return names


def test_apply_creates_every_resource_with_its_settings(settings: Settings, clients: Clients) -> None:
    inv = _inventory("ct-apply")
    report = apply_inventory(inv, clients)
    n_resources = (
        len(inv.buckets)
        + 2 * len(inv.queues)
        + len(inv.topics)
        + sum(len(t.subscriptions) for t in inv.topics.values())
        + len(inv.secrets)
    )
    assert report.count("created") == n_resources and report.changed

    s3, sqs, sns = _client(settings, "s3"), _client(settings, "sqs"), _client(settings, "sns")
    for b in inv.buckets.values():
        assert s3.get_bucket_versioning(Bucket=b.name)["Status"] == "Enabled"
        sse = s3.get_bucket_encryption(Bucket=b.name)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        pab = s3.get_public_access_block(Bucket=b.name)["PublicAccessBlockConfiguration"]
        assert all(
            pab[k]
            for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
        )
        rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=b.name)["Rules"]}
        assert set(rules) == {r.id for r in b.lifecycle_rules}
        for r in b.lifecycle_rules:
            assert (
                rules[r.id]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == r.abort_multipart_days
            )
    logs = s3.get_bucket_lifecycle_configuration(Bucket=inv.buckets["airflow-logs"].name)["Rules"]
    assert logs[0]["Expiration"]["Days"] == 30

    for q in inv.queues.values():
        attrs, dlq = _queue_attrs(sqs, q.name), _queue_attrs(sqs, q.name + "-dlq")
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == q.max_receive_count
        assert int(attrs["VisibilityTimeout"]) == q.visibility_timeout_seconds
        assert int(dlq["MessageRetentionPeriod"]) == q.dlq_retention_seconds
        assert attrs["SqsManagedSseEnabled"] == "true"

    for t in inv.topics.values():
        arn = (
            service_resources(inv.env, inventory=inv)["CLINOPS_EVENTS_TOPIC_ARN"].rsplit(":", 1)[0]
            + ":"
            + t.name
        )
        subs = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
        endpoints = {s["Endpoint"].rsplit(":", 1)[-1]: s for s in subs}
        assert set(endpoints) == {inv.queues[s.queue].name for s in t.subscriptions}
        for s in t.subscriptions:
            sub = endpoints[inv.queues[s.queue].name]
            raw = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
            assert raw.get("RawMessageDelivery") == ("true" if s.raw_message_delivery else "false")

    values = _secret_values(settings, inv)
    file_text = INVENTORY_FILE.read_text()
    sm = _client(settings, "secretsmanager")
    for key, value in values.items():
        assert len(value) >= 32 and value not in file_text
        assert (
            sm.describe_secret(SecretId=inv.secrets[key].name)["Description"] == inv.secrets[key].description
        )
    assert len(set(values.values())) == len(values), "every secret gets its own generated value"


def test_wiring_works_end_to_end(settings: Settings, clients: Clients) -> None:
    """What the services rely on: a publish to the observations topic reaches its queue
    (subscription + queue policy), and model objects can be written to the SSE-KMS bucket."""
    inv = _inventory("ct-wire")
    apply_inventory(inv, clients)
    res = service_resources(inv.env, endpoint=settings.localstack_url, inventory=inv)
    sns, sqs, s3 = _client(settings, "sns"), _client(settings, "sqs"), _client(settings, "s3")
    sns.publish(TopicArn=res["CLINOPS_EVENTS_TOPIC_ARN"], Message='{"subject": "S-001", "hr": 71}')
    got = sqs.receive_message(
        QueueUrl=res["CLINOPS_OBSERVATIONS_QUEUE_URL"], WaitTimeSeconds=10, MaxNumberOfMessages=1
    ).get("Messages", [])
    assert got and json.loads(got[0]["Body"]) == {"subject": "S-001", "hr": 71}  # raw delivery
    s3.put_object(Bucket=res["CLINOPS_MODEL_BUCKET"], Key=res["CLINOPS_MODEL_KEY"], Body=b"model-bytes")
    obj = s3.get_object(Bucket=res["CLINOPS_MODEL_BUCKET"], Key=res["CLINOPS_MODEL_KEY"])
    assert obj["Body"].read() == b"model-bytes" and obj.get("ServerSideEncryption") == "aws:kms"


def test_second_apply_changes_nothing_and_says_so(settings: Settings, clients: Clients) -> None:
    inv = _inventory("ct-idem")
    first = apply_inventory(inv, clients)
    before = _secret_values(settings, inv)
    second = apply_inventory(inv, clients)
    assert first.changed and not second.changed
    assert second.count("unchanged") == len(first.changes)
    assert second.summary().endswith("(no change)")
    assert _secret_values(settings, inv) == before, "a re-apply must not regenerate secrets"
    assert drift(inv, clients) == []


def test_drift_lists_every_difference_and_apply_repairs_them(settings: Settings, clients: Clients) -> None:
    inv = _inventory("ct-drift")
    apply_inventory(inv, clients)
    assert drift(inv, clients) == []
    s3, sqs, sns = _client(settings, "s3"), _client(settings, "sqs"), _client(settings, "sns")
    p = inv.prefix

    # 1. versioning suspended
    s3.put_bucket_versioning(Bucket=p + "mlflow-artifacts", VersioningConfiguration={"Status": "Suspended"})
    # 2. one of feature-store's two lifecycle rules removed
    fs = p + "feature-store"
    kept = [
        r for r in s3.get_bucket_lifecycle_configuration(Bucket=fs)["Rules"] if r["ID"] != "tier-snapshots"
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=fs, LifecycleConfiguration={"Rules": kept})
    # 3. a queue deleted
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=p + "feature-jobs")["QueueUrl"])
    # 4. an unexpected bucket with the project's prefix
    s3.create_bucket(Bucket=p + "scratch")
    # 5. a subscription removed
    topic_arn = f"arn:aws:sns:us-east-1:000000000000:{p}model-events"
    sub = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"][0]
    sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
    # 6. a redrive policy loosened
    obs_url = sqs.get_queue_url(QueueName=p + "observations")["QueueUrl"]
    dlq_arn = _queue_attrs(sqs, p + "observations-dlq")["QueueArn"]
    sqs.set_queue_attributes(
        QueueUrl=obs_url,
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 50})},
    )

    found = {(d.kind, d.name, d.problem, d.field) for d in drift(inv, clients)}
    expected = {
        ("bucket", p + "mlflow-artifacts", "mismatch", "versioning"),
        ("bucket", p + "feature-store", "mismatch", "lifecycle_rules"),
        ("queue", p + "feature-jobs", "missing", ""),
        ("bucket", p + "scratch", "unexpected", ""),
        ("subscription", f"{p}model-events -> {p}model-events", "missing", ""),
        ("queue", p + "observations", "mismatch", "redrive"),
    }
    assert found == expected
    diffs = {(d.kind, d.name, d.field): d for d in drift(inv, clients)}
    redrive = diffs[("queue", p + "observations", "redrive")]
    assert redrive.actual["max_receive_count"] == 50 and redrive.expected["max_receive_count"] == 5
    assert "inventory says" in str(redrive)

    repair = apply_inventory(inv, clients)
    assert repair.count("created") == 2  # the queue and the subscription
    assert repair.count("updated") == 3  # versioning, lifecycle, redrive
    assert [(d.kind, d.name) for d in repair.unexpected] == [("bucket", p + "scratch")]
    # unexpected resources are reported, never deleted
    assert [(d.kind, d.name, d.problem) for d in drift(inv, clients)] == [
        ("bucket", p + "scratch", "unexpected")
    ]


def test_drift_sees_bucket_settings_that_were_removed(settings: Settings, clients: Clients) -> None:
    """S3 answers "not configured" with an error code per setting; drift must read that as an
    absent setting (and report it), not as a failure."""
    inv = _inventory("ct-unset")
    apply_inventory(inv, clients)
    s3 = _client(settings, "s3")
    name = inv.prefix + "mlflow-artifacts"
    s3.delete_public_access_block(Bucket=name)
    s3.delete_bucket_lifecycle(Bucket=name)

    diffs = {(d.kind, d.name, d.field): d for d in drift(inv, clients)}
    assert set(diffs) == {("bucket", name, "public_access_block"), ("bucket", name, "lifecycle_rules")}
    assert not any(diffs[("bucket", name, "public_access_block")].actual.values())
    assert diffs[("bucket", name, "lifecycle_rules")].actual == []
    repair = apply_inventory(inv, clients)
    [updated] = [c for c in repair.changes if c.action == "updated"]
    assert (updated.name, set(updated.fields)) == (name, {"public_access_block", "lifecycle_rules"})
    assert drift(inv, clients) == []


def test_bad_entry_is_rejected_before_anything_is_created(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    data = _raw()
    data["project"] = "ct-bad"
    # the last entry of the file is bad: everything before it is valid
    last_secret = list(data["secrets"])[-1]
    data["secrets"][last_secret]["descripton"] = "typo"
    bad = tmp_path / "inventory.tfvars.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InventoryError, match=rf"^secrets\.{last_secret}\.descripton: unknown field"):
        load_inventory(bad)
    assert _names_with_prefix(settings, "ct-bad-") == []


def test_boto3_errors_become_inventory_errors_naming_the_resource(port_block: PortBlock) -> None:
    nobody = f"http://127.0.0.1:{port_block.port()}"  # a free port: connection refused
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    dead = Clients.from_session(session, nobody)
    cfg = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=2)
    dead.s3 = session.client("s3", endpoint_url=nobody, config=cfg)
    dead.sts = None  # LocalStack's account id is assumed; the first real call is the bucket listing
    with pytest.raises(InventoryError, match=r"^bucket ct-dead-dev-\*") as err:
        apply_inventory(_inventory("ct-dead"), dead)
    assert isinstance(err.value.__cause__, (BotoCoreError, ClientError))


def test_provision_with_boto3_reports_the_method(settings: Settings, clients: Clients) -> None:
    inv = _inventory("ct-prov")
    steps: list[str] = []
    report = provision(settings, steps.append, clients=clients, inventory=inv, method="boto3")
    assert report.method == "boto3" and report.apply is not None and report.apply.changed
    assert report.drift == [] and report.in_sync
    assert any("boto3" in s for s in steps)
    again = provision(settings, clients=clients, inventory=inv, method="boto3")
    assert again.apply is not None and not again.apply.changed


def test_provision_auto_says_why_it_did_not_use_terraform(
    settings: Settings, clients: Clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With terraform on PATH but its providers unobtainable (an empty provider mirror, so
    this never depends on the network), auto falls back to boto3 and says why."""
    inv = _inventory("ct-auto")
    s = settings.with_(state_dir=tmp_path / "state")
    if shutil.which("terraform"):
        rc = tmp_path / "terraformrc"
        (tmp_path / "mirror").mkdir()
        rc.write_text(
            f'provider_installation {{\n  filesystem_mirror {{\n    path = "{tmp_path / "mirror"}"\n'
            "  }\n}\n"
        )
        monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(rc))
        report = provision(s, clients=clients, inventory=inv)
        assert report.method == "boto3" and "init failed" in report.note
        with pytest.raises(TerraformInitError):
            provision(s, clients=clients, inventory=inv, method="terraform")
    else:
        report = provision(s, clients=clients, inventory=inv)
        assert report.method == "boto3" and "not on PATH" in report.note
        with pytest.raises(InventoryError, match="no terraform binary"):
            provision(s, clients=clients, inventory=inv, method="terraform")
    assert report.in_sync


def test_provision_with_terraform_when_it_can_init(
    settings: Settings, clients: Clients, tmp_path: Path
) -> None:
    """The Terraform path proper: same inventory, same drift check. Needs terraform and its
    providers (registry or mirror); skipped, and saying why, where they are not available."""
    tf = shutil.which("terraform")
    if tf is None:
        pytest.skip("terraform is not on PATH")
    s = settings.with_(state_dir=tmp_path / "state", environment="staging")
    inv = load_inventory(env="staging")
    try:
        terraform_init(s, inv, tf)
    except TerraformInitError as e:
        pytest.skip(f"terraform init cannot get its providers here: {str(e).splitlines()[0]}")
    report = provision(s, clients=clients, inventory=inv, method="terraform")
    assert report.method == "terraform"
    assert report.drift == [], [str(d) for d in report.drift]


def test_read_secret_registers_the_value_with_the_secret_gate(
    settings: Settings, clients: Clients, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLINOPS_ARTIFACT_DIR", str(tmp_path))
    inv = _inventory("ct-secret")
    apply_inventory(inv, clients)
    value = read_secret(inv, clients, "postgres-password")
    assert value == _secret_values(settings, inv)["postgres-password"]
    assert json.dumps(value) in (tmp_path / "secrets.jsonl").read_text().splitlines()
    with pytest.raises(InventoryError, match="secrets.nope: not in the inventory"):
        read_secret(inv, clients, "nope")
