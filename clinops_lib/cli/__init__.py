"""The ``clinops`` command line: a thin layer over the library.

Exit status: 0 success, 1 a run/verification/target failure, 2 bad input (nothing was done).
Every subcommand imports its module lazily so ``clinops --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__, catalog
from ..config import Settings
from ..exceptions import ClinopsError, ConfigError, ParameterError

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(target=getattr(args, "target", None))


# -- run / evidence --------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    from .run import run_from_cli

    return run_from_cli(args, _settings(args))


def _cmd_evidence_verify(args: argparse.Namespace) -> int:
    from .evidence import verify_from_cli

    return verify_from_cli(args, _settings(args))


def _cmd_evidence_push(args: argparse.Namespace) -> int:
    from .evidence import push_from_cli

    return push_from_cli(args, _settings(args))


def _cmd_approve(args: argparse.Namespace) -> int:
    from .approve import approve_from_cli

    return approve_from_cli(args, _settings(args))


def _cmd_evidence_list(args: argparse.Namespace) -> int:
    from .evidence import list_from_cli

    return list_from_cli(args, _settings(args))


# -- platform lifecycle ------------------------------------------------------------------
def _cmd_up(args: argparse.Namespace) -> int:
    from .platform import up_from_cli

    return up_from_cli(args, _settings(args))


def _cmd_status(args: argparse.Namespace) -> int:
    from .platform import status_from_cli

    return status_from_cli(args, _settings(args))


def _cmd_abort(args: argparse.Namespace) -> int:
    from .platform import abort_from_cli

    return abort_from_cli(args, _settings(args))


def _cmd_down(args: argparse.Namespace) -> int:
    from .platform import down_from_cli

    return down_from_cli(args, _settings(args))


def _cmd_inventory(args: argparse.Namespace) -> int:
    from .platform import inventory_from_cli

    return inventory_from_cli(args, _settings(args))


def _cmd_chart(args: argparse.Namespace) -> int:
    from .chart import chart_from_cli

    return chart_from_cli(args, _settings(args))


def _cmd_cluster(args: argparse.Namespace) -> int:
    from .cluster import cluster_from_cli

    return cluster_from_cli(args, _settings(args))


def _cmd_kind(args: argparse.Namespace) -> int:
    from .kind import kind_from_cli

    return kind_from_cli(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clinops", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"clinops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute a runbook headlessly and seal its evidence bundle")
    run.add_argument("runbook", help="path to a runbook .ipynb (or its name under runbooks/)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a parameter (VALUE is parsed as YAML: 10, 0.5, true, [10, 50])")
    run.add_argument("-f", "--parameters-file", help="YAML file of parameters (-p wins over it)")
    run.add_argument("--target", choices=catalog.target_names(),
                     help="where the runbook runs (default: local)")
    run.add_argument("--out", help="evidence archive directory (default: ./evidence)")
    run.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    run.set_defaults(func=_cmd_run)

    ev = sub.add_parser("evidence", help="verify or list sealed evidence bundles")
    ev_sub = ev.add_subparsers(dest="evidence_command", required=True)
    verify = ev_sub.add_parser("verify", help="check hashes, the chain and signatures of a bundle or archive")
    verify.add_argument("path")
    verify.add_argument("--public-key", help="Ed25519 public key (PEM) the signatures must verify against")
    verify.add_argument("--remote", action="store_true", help="also compare with the write-once bucket")
    verify.add_argument("--bucket", help="remote bucket (default: the inventory's evidence bucket)")
    verify.add_argument("--prefix", default="", help="key prefix in the remote bucket")
    verify.set_defaults(func=_cmd_evidence_verify)
    push = ev_sub.add_parser("push", help="upload sealed bundles and the checkpoint to the write-once bucket")
    push.add_argument("path", nargs="?", help="evidence archive (default: ./evidence)")
    push.add_argument("--bucket", help="remote bucket (default: the inventory's evidence bucket)")
    push.add_argument("--prefix", default="", help="key prefix in the remote bucket")
    push.set_defaults(func=_cmd_evidence_push)
    approve = sub.add_parser("approve", help="sign an approval of an evidence bundle with your own key")
    approve.add_argument("bundle")
    approve.add_argument("--meaning", required=True, help="reviewed | approved for promotion | rejected")
    approve.add_argument("--key", required=True, help="your Ed25519 private key (PEM, passphrase-protected)")
    approve.add_argument("--comment", default="", help="free text kept in the signed statement")
    approve.set_defaults(func=_cmd_approve)
    lst = ev_sub.add_parser("list", help="one line per run: runbook, time, target, verdict")
    lst.add_argument("path", nargs="?")
    lst.set_defaults(func=_cmd_evidence_list)

    up = sub.add_parser("up", help="bring the platform's levels up on the target")
    up.add_argument("--levels", help="comma-separated level numbers, e.g. 0,1,4,6 (default: all)")
    up.add_argument("--with", dest="opt_in", metavar="NAMES",
                    help="comma-separated opt-in components to start too, e.g. debezium-cdc (default: all "
                    "of them when every level is brought up, none otherwise)")
    up.add_argument("--target", choices=catalog.target_names())
    up.set_defaults(func=_cmd_up)
    status = sub.add_parser("status", help="every component with its health, every track with its weight")
    status.add_argument("--target", choices=catalog.target_names())
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)
    abort = sub.add_parser("abort", help="all traffic of a service to stable, then stop its canary (green)")
    abort.add_argument("service", help="e.g. clinical-gateway")
    abort.add_argument("--target", choices=catalog.target_names())
    abort.set_defaults(func=_cmd_abort)
    down = sub.add_parser("down", help="stop everything the target started")
    down.add_argument("--purge", action="store_true", help="also remove the state directory")
    down.add_argument("--target", choices=catalog.target_names())
    down.set_defaults(func=_cmd_down)

    inv = sub.add_parser("inventory", help="the AWS inventory: apply it to LocalStack or check drift")
    inv.add_argument("action", choices=("apply", "drift", "show"))
    inv.add_argument("--target", choices=catalog.target_names())
    inv.set_defaults(func=_cmd_inventory)

    chart = sub.add_parser("chart", help="render or lint the Helm charts with the Helm SDK")
    chart.add_argument("action", choices=("render", "lint"))
    chart.add_argument("--env", default="dev", choices=catalog.ENVIRONMENTS)
    chart.add_argument("--out", help="write the rendered manifests here (default: stdout)")
    chart.add_argument("--profile", action="append", default=[],
                       help="values profile layered over the environment (charts/clinical-mlops/"
                            "values-PROFILE.yaml, e.g. local-cluster); repeatable")
    chart.add_argument("--kube-version", help="Kubernetes version to render for, e.g. 1.20.2 "
                                              "(default: Helm's current one)")
    chart.set_defaults(func=_cmd_chart)

    kind = sub.add_parser("kind", help="create or delete the kind cluster and install the stack")
    kind.add_argument("action", choices=("create", "delete", "install-stack"))
    kind.set_defaults(func=_cmd_kind)

    from .cluster import add_parser as add_cluster_parser  # light: argparse only, no cluster code runs

    add_cluster_parser(sub).set_defaults(func=_cmd_cluster)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ParameterError, ConfigError) as e:
        print(f"clinops: error: {e}", file=sys.stderr)
        return 2
    except ClinopsError as e:
        print(f"clinops: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clinops: interrupted", file=sys.stderr)
        return 130

