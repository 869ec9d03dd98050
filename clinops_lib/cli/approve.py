"""``clinops approve BUNDLE --meaning M --key PEM``: sign an approval of a sealed bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Settings

__all__ = ["approve_from_cli"]


def approve_from_cli(args: argparse.Namespace, settings: Settings) -> int:
    """Sign an approval with the operator's own key (the passphrase is asked, never passed)."""
    from ..evidence.approvals import approve, load_registry

    out = approve(
        Path(args.bundle),
        meaning=args.meaning,
        key=Path(args.key),
        registry=load_registry(settings.approvers_file),
        comment=args.comment or "",
    )
    print(f"approval: {out}")
    return 0
