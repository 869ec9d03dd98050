"""The package layering of clinops_lib, checked by import-linter (contracts in pyproject.toml).

``lint-imports`` runs on the tree as it is (every contract kept), then on a copy with one
forbidden import injected, to prove the check can fail: a target importing the drill engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clinops_lib.config import project_root

#: unit: a static check of the source tree (lint-imports), no platform process.
pytestmark = pytest.mark.unit

ROOT = project_root()
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_every_layering_contract_is_kept() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout and "targets never import drills" in out.stdout


def test_the_check_fails_when_a_forbidden_import_is_added(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "clinops_lib", tmp_path / "clinops_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "clinops_lib" / "targets" / "base.py"
    injected = "\n\ndef _judge():\n    from ..drills import judge\n\n    return judge\n"
    base.write_text(base.read_text() + injected)
    out = _lint(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "targets never import drills, evidence or the CLI BROKEN" in out.stdout
    assert "clinops_lib.targets.base -> clinops_lib.drills" in out.stdout
