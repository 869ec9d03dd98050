"""The platform's AWS inventory: one JSON file, applied by Terraform on AWS and by boto3 on LocalStack.

:mod:`.model` reads and validates ``terraform/inventory.tfvars.json`` into dataclasses, applies it
and reports drift; :mod:`.terraform` runs Terraform against LocalStack with the same file.
"""

from __future__ import annotations

from .model import (
    EVENTS_TOPIC,
    MODEL_BUCKET,
    ApplyReport,
    Bucket,
    Change,
    Clients,
    Difference,
    Inventory,
    LifecycleRule,
    ProvisionReport,
    Queue,
    Secret,
    Subscription,
    Topic,
    apply_inventory,
    default_inventory_path,
    drift,
    inventory_from_cli,
    load_inventory,
    make_clients,
    parse_inventory,
    provision,
    read_secret,
    service_resources,
)

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
