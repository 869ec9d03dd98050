"""Shared fixtures (keep small: each test module owns its own helpers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat
import pytest


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
