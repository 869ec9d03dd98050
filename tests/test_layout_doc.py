"""docs/CONTRACTS.md's package layout stays true to the tree (issue 10: "a newcomer finds any concern
from the tree"): every package and every module of clinops_lib is named in the layout block, and
every ``name.py`` the block names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clinops_lib"
#: Folders the block names as a whole (their modules are described by the folder's own docstrings).
WHOLE = {"clusters/debian", "pipeline/dags", "runs/html_copy"}


def _layout_block() -> str:
    text = (ROOT / "docs" / "CONTRACTS.md").read_text()
    match = re.search(r"## The package layout.*?```\n(.*?)```", text, re.S)
    assert match, "docs/CONTRACTS.md has no package layout block"
    return match.group(1)


def _named(block: str, word: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", block) is not None


def test_every_package_and_module_is_in_the_layout() -> None:
    block = _layout_block()
    missing = []
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE)
        if "__pycache__" in rel.parts or any(str(rel).startswith(w + "/") for w in WHOLE):
            continue
        if path.is_dir() and any(path.glob("*.py")) and not _named(block, f"{path.name}/"):
            missing.append(f"{rel}/")
        elif path.suffix == ".py" and not path.name.startswith("__"):
            if not (_named(block, path.name) or _named(block, path.stem)):
                missing.append(str(rel))
    assert not missing, f"named nowhere in docs/CONTRACTS.md's layout block: {missing}"


def test_every_module_the_layout_names_exists() -> None:
    names = set(re.findall(r"([\w]+\.py)\b", _layout_block()))
    existing = {p.name for p in PACKAGE.rglob("*.py")}
    assert names - existing == set()
