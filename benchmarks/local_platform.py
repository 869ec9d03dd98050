"""The local platform a real-target benchmark drills on: levels 0, 1, 4, 6 in a temporary state
directory on ``--port-base`` (a developer's own block, outside the test allocator's range)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clinops_lib.config import PortMap, Settings  # noqa: E402
from clinops_lib.targets.base import Target, get_target  # noqa: E402

__all__ = ["platform_down", "platform_up"]


def platform_up(port_base: int) -> tuple[Target, Path]:
    state = Path(tempfile.mkdtemp(prefix="clinops-bench-"))
    state.chmod(0o755)  # PostgreSQL (unprivileged under root) must enter it
    target = get_target(Settings(target="local", state_dir=state, ports=PortMap(port_base)))
    target.up([0, 1, 4, 6])
    return target, state


def platform_down(target: Target, state: Path) -> None:
    try:
        target.down(purge=True)
        target.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
