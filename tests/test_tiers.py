"""Every test has a tier marker, so ``-m unit`` / ``component`` / ``e2e`` / ``cluster`` select the whole
suite between them and a new test cannot fall between the tiers unnoticed.

The check itself lives in ``conftest.py`` (a session with an untiered test stops at collection),
so every run of the suite proves the suite is tiered; this test proves the check works.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def _collect(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_test_without_a_tier_stops_the_session(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in ("conftest.py", "ports.py"):
        (tests / name).write_text((ROOT / "tests" / name).read_text())
    (tests / "test_new.py").write_text("def test_forgot_its_tier():\n    assert True\n")
    proc = _collect("tests", cwd=tmp_path)
    assert proc.returncode != 0
    assert "test_forgot_its_tier" in proc.stdout + proc.stderr and "tier" in proc.stdout + proc.stderr
