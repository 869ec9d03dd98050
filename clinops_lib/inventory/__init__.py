"""The platform's AWS inventory: one JSON file, applied by Terraform on AWS and by boto3 on LocalStack.

:mod:`.model` reads and validates ``terraform/inventory.tfvars.json`` into dataclasses; :mod:`.drift`
observes what is live and compares; :mod:`.apply` creates and updates (and ``provision`` picks
Terraform or boto3); :mod:`.terraform` runs Terraform against LocalStack with the same file.
"""

from __future__ import annotations

from .apply import ApplyReport, Change, ProvisionReport, apply_inventory, provision, read_secret
from .drift import Clients, Difference, drift, make_clients
from .model import (
    EVENTS_TOPIC,
    MODEL_BUCKET,
    Bucket,
    Inventory,
    LifecycleRule,
    Queue,
    Secret,
    Subscription,
    Topic,
    default_inventory_path,
    load_inventory,
    parse_inventory,
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
    "load_inventory",
    "make_clients",
    "parse_inventory",
    "provision",
    "read_secret",
    "service_resources",
]
