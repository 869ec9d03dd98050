"""``clinops kind create|delete|install-stack``: the kind cluster and its pinned stack."""

from __future__ import annotations

import argparse

from ..clusters.kind import (
    check_prerequisites,
    create_cluster,
    delete_cluster,
    install_stack,
    wait_nodes_ready,
)
from ..config import Settings
from ..exceptions import ConfigError
from ..targets.kube.client import load_clients

__all__ = ["kind_from_cli"]


def kind_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``clinops kind create|delete|install-stack``."""
    action = args.action
    if action == "create":
        created = create_cluster(settings)
        ctx = f"kind-{settings.kind_cluster}"
        clients = load_clients(settings, context=ctx)
        nodes = wait_nodes_ready(clients)
        verb = "created" if created else "already exists"
        print(f"kind cluster {settings.kind_cluster} {verb}; Ready nodes: {', '.join(nodes)} (context {ctx})")
        return 0
    if action == "delete":
        delete_cluster(settings)
        print(f"kind cluster {settings.kind_cluster} deleted")
        return 0
    if action == "install-stack":
        check_prerequisites()
        names = install_stack(settings, progress=lambda m: print(f"installing {m}", flush=True))
        print(f"stack installed: {', '.join(names)}; LocalStack on the kind network")
        return 0
    raise ConfigError(f"unknown kind action {action!r}; known: create, delete, install-stack")
