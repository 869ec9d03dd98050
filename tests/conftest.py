"""Shared fixtures (keep small: each test module owns its own helpers)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import nbformat
import pytest
from ports import PortAllocator, PortBlock

#: One allocator per test process: each pytest-xdist worker is its own process with its own blocks.
_PORTS = PortAllocator()

#: Every test belongs to one of these tiers (markers registered in pyproject.toml); select with -m.
TIERS = ("unit", "component", "e2e", "cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a suite in which a test has no tier: ``-m unit`` would silently skip it."""
    untiered = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    if untiered:
        shown = "\n  ".join(untiered[:20])
        raise pytest.UsageError(
            f"{len(untiered)} test(s) without a tier marker ({', '.join(TIERS)}):\n  {shown}\n"
            "mark the module (pytestmark = pytest.mark.<tier>) or the test"
        )

REPO = Path(__file__).resolve().parent.parent


def checkov_executable() -> Path:
    """checkov from its own environment (``.venv-checkov``, made by ``scripts/setup.sh --tests``).

    It is kept out of the project's ``.venv`` so that its large dependency tree cannot overwrite the
    project's packages (see tools/checkov/requirements.in). Missing means the set-up did not run: a
    failure, not a skip, so a broken install can never pass as "skipped".
    """
    exe = REPO / ".venv-checkov" / "bin" / "checkov"
    if not exe.exists():
        pytest.fail(f"{exe} missing: run `bash scripts/setup.sh --tests`")
    return exe


def enterable_tmpdir(prefix: str) -> Path:
    """A fresh directory under /tmp that every user may enter (mode 0755).

    PostgreSQL runs as the unprivileged ``postgres`` user when the tests run as root, so every
    parent of a local-target state dir must be enterable; pytest's own tmp_path (0700) is not.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def write_notebook(
    path: Path, cells: Sequence[str], parameters: str | None = None, markdown: str = "# Test runbook"
) -> Path:
    """A small runbook on the ``clinops`` kernel: markdown, optional parameters cell, code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "clinops", "display_name": "clinops", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def make_notebook() -> Callable[..., Path]:
    """``make_notebook(path, cells, parameters=None)`` writes a runbook-shaped notebook."""
    return write_notebook


@pytest.fixture(scope="session")
def port_allocator() -> Iterator[PortAllocator]:
    """Free, locked port blocks for this test process (module-scoped fixtures take theirs here)."""
    yield _PORTS
    _PORTS.release_all()


@pytest.fixture
def port_block(port_allocator: PortAllocator) -> Iterator[PortBlock]:
    """A port block of this test's own, released when the test ends."""
    block = port_allocator.block()
    yield block
    port_allocator.release(block)
