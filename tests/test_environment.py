"""The installed environments are deterministic: no two distributions write the same file.

When two distributions install the same path (``python-hcl2`` and checkov's ``bc-python-hcl2`` both
wrote ``hcl2/``), whichever the installer unpacks last wins, so one lock file yields a working or a
broken environment by chance. The cure: one HCL parser (bc-python-hcl2, checkov's) and checkov in
an environment of its own (``.venv-checkov``); this test keeps the cure in place by reading every
installed distribution's RECORD file — what the installer actually wrote — in each environment the
project's set-up creates.

A path several distributions write with the *same* recorded sha256 is not a clash: whichever is
unpacked last, the bytes on disk are the same, so the environment does not depend on the order.
MLflow 3 is built that way (``mlflow`` = ``mlflow-skinny`` + the UI, ``mlflow-skinny`` ⊇
``mlflow-tracing``, the shared files byte-identical), and no MLflow 3 install avoids it.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.unit

#: Environments scripts/setup.sh creates beside the checkout (``.venv`` and every ``.venv-*``).
ENVIRONMENTS = sorted(p for p in REPO.glob(".venv*") if (p / "pyvenv.cfg").exists())


def _distribution_name(dist_info: Path) -> str:
    for line in (dist_info / "METADATA").read_text(errors="replace").splitlines():
        if line.startswith("Name:"):
            return line.split(":", 1)[1].strip()
    return dist_info.name.removesuffix(".dist-info")


def overlapping_files(site_packages: Path) -> dict[str, set[str]]:
    """Every path (relative to site-packages) that more than one installed distribution wrote
    with different contents (different recorded sha256; identical bytes cannot depend on the order).

    Byte-code caches and each distribution's own ``.dist-info`` are left out: they follow from the
    sources and are unique by construction.
    """
    writers: dict[str, set[str]] = defaultdict(set)
    digests: dict[str, set[str]] = defaultdict(set)
    for record in site_packages.glob("*.dist-info/RECORD"):
        name = _distribution_name(record.parent)
        with record.open(newline="", errors="replace") as fh:
            for row in csv.reader(fh):
                if not row:
                    continue
                path = row[0]
                if ".dist-info/" in path or "__pycache__/" in path:
                    continue
                writers[path].add(name)
                digests[path].add(row[1] if len(row) > 1 else "")
    return {path: names for path, names in writers.items() if len(names) > 1 and len(digests[path]) > 1}


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    assert found, f"{venv}: no site-packages"
    return found[0]


def test_the_set_up_created_the_environments_this_test_reads() -> None:
    names = {p.name for p in ENVIRONMENTS}
    assert {".venv", ".venv-localstack", ".venv-checkov"} <= names, names


@pytest.mark.parametrize("venv", ENVIRONMENTS, ids=lambda p: p.name)
def test_no_two_distributions_write_the_same_file(venv: Path) -> None:
    clashes = overlapping_files(_site_packages(venv))
    report = sorted(f"{path}: {' and '.join(sorted(names))}" for path, names in clashes.items())
    assert not report, f"{venv.name}: distributions overwrite each other's files:\n" + "\n".join(report[:20])


def _fake_distribution(site: Path, name: str, files: list[str],
                       digest: str | None = None) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows = [f"{f},sha256={digest or name},1" for f in files] + [f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def test_a_clashing_distribution_is_named_with_its_twin(tmp_path: Path) -> None:
    clashing = ["hcl2/__init__.py", "hcl2/api.py", "hcl2/__pycache__/api.pyc"]
    _fake_distribution(tmp_path, "python-hcl2", clashing)
    _fake_distribution(tmp_path, "clean-one", ["clean_one/__init__.py"])
    assert overlapping_files(tmp_path) == {}
    _fake_distribution(tmp_path, "bc-python-hcl2", clashing)
    assert overlapping_files(tmp_path) == {
        "hcl2/__init__.py": {"python-hcl2", "bc-python-hcl2"},
        "hcl2/api.py": {"python-hcl2", "bc-python-hcl2"},
    }


def test_a_byte_identical_split_distribution_is_not_a_clash(tmp_path: Path) -> None:
    """MLflow 3's layout: the same bytes from two distributions; a differing file is still a clash."""
    _fake_distribution(tmp_path, "mlflow", ["mlflow/__init__.py", "mlflow/server/js/index.html"],
                       digest="same")
    _fake_distribution(tmp_path, "mlflow-skinny", ["mlflow/__init__.py"], digest="same")
    assert overlapping_files(tmp_path) == {}
    _fake_distribution(tmp_path, "mlflow-fork", ["mlflow/__init__.py"], digest="other")
    assert overlapping_files(tmp_path) == {
        "mlflow/__init__.py": {"mlflow", "mlflow-skinny", "mlflow-fork"}
    }
