"""Shared fixtures (keep small: each test module owns its own helpers).

One local platform per test process (``shared_platform``): PostgreSQL, Redis, LocalStack,
Prometheus, HAProxy and the services come up once, on a port block of the harness, for every
module that only *uses* them (drills, inventory, remote evidence, interruption). A module gets
it through ``local_platform(levels)``, which brings the requested levels up first -- a second
``up`` changes nothing and restarts what an earlier test killed -- and aborts a canary an earlier
test left, so no module depends on which ran before it. Modules that need the platform for
themselves keep their own: they kill components, take it down mid-test or time its start
(test_local_target, test_local_up_overlap, the e2e runbooks that end with ``clinops down``,
the prod-environment promotion). Each pytest-xdist worker is its own process with its own
shared platform.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from ports import PortAllocator, PortBlock

if TYPE_CHECKING:
    from clinops_lib.config import Settings
    from clinops_lib.targets.local.target import LocalTarget

#: One allocator per test process: each pytest-xdist worker is its own process with its own blocks.
_PORTS = PortAllocator()

#: Every test belongs to one of these tiers (markers registered in pyproject.toml); select with -m.
TIERS = ("unit", "component", "e2e", "cluster")


#: seconds spent per tier in this session (setup + call + teardown of each test, the heaviest of
#: its tier markers; a module fixture's start counts for the test that needed it). Read from the
#: reports, so the pytest-xdist controller, which collects nothing itself, sums its workers' tests.
_TIER_SECONDS: dict[str, float] = {}

#: The cluster tier's folder: its tests form one pytest-xdist group (one cluster per machine).
CLUSTER_TESTS = Path(__file__).resolve().parent / "cluster"

#: Modules that take :func:`drills_lock` in a fixture rather than through the ``drills`` marker.
LOCKING_MODULES = frozenset({"test_runbooks_e2e"})

#: The order of the ``drills`` group (unlisted modules first). The local drills go last: the most
#: sensitive of them (a 5 % latency tail) missed its tail when it ran at the start of the suite,
#: beside the cluster tier creating its cluster, starting pods and booting LocalStack.
DRILLS_GROUP_ORDER = ("test_promotion_e2e", "test_runbooks_e2e", "test_drills_local")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a suite in which a test has no tier: ``-m unit`` would silently skip it.

    Then the pytest-xdist groups (``scripts/test.sh`` runs ``--dist loadgroup``): a module is one
    group, so its module fixtures (a platform, a runbook sequence) start once in one worker; the
    whole cluster tier is one group, since only one cluster can run per machine and its package
    fixtures (the cluster, its images, its Prometheus) must live in one worker. Heaviest tier first
    (``--no-loadscope-reorder`` keeps this order): the cluster group, whose worker builds the
    binaries on a cold machine while the other runs the rest, then e2e, component, unit, so the
    short tests fill the end instead of one long module running alone.

    The modules that hold the drills lock outside the cluster tier (a test marked ``drills``, or
    :data:`LOCKING_MODULES`) form one more group, ``drills``, queued right after the cluster: in
    two groups on both workers they waited for each other's lock with the other worker idle (a run
    spent 7 min so, and finished 4 min later than the same tests grouped).
    """
    untiered = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    if untiered:
        shown = "\n  ".join(untiered[:20])
        raise pytest.UsageError(
            f"{len(untiered)} test(s) without a tier marker ({', '.join(TIERS)}):\n  {shown}\n"
            "mark the module (pytestmark = pytest.mark.<tier>) or the test"
        )
    # the cluster folder 0, drills 1, then by tier (a kind test elsewhere is tier "cluster"), e2e, ...
    heaviest_first = {tier: rank + 2 for rank, tier in enumerate(reversed(TIERS))}
    locking = {item.path for item in items if CLUSTER_TESTS not in item.path.parents
               and (item.get_closest_marker("drills") or item.path.stem in LOCKING_MODULES)}
    module_rank: dict[Path, int] = {}  # a module ranks by its heaviest test, so it stays in one piece
    for item in items:
        if CLUSTER_TESTS in item.path.parents:
            group, rank = "cluster", 0
        elif item.path in locking:
            group, rank = "drills", 1
        else:
            group, rank = item.path.stem, heaviest_first[_tier(item.keywords) or TIERS[0]]
        item.add_marker(pytest.mark.xdist_group(group))
        module_rank[item.path] = min(rank, module_rank.get(item.path, rank))

    def position(item: pytest.Item) -> tuple[int, int]:
        stem = item.path.stem
        in_order = item.path in locking and stem in DRILLS_GROUP_ORDER
        return module_rank[item.path], DRILLS_GROUP_ORDER.index(stem) + 1 if in_order else 0

    items.sort(key=position)  # stable: collection order within a rank


#: Real drills (a judge measuring latency on real services) never run two at once on this machine,
#: in whichever pytest-xdist worker or test session: beside another drill a clean canary measured the
#: other drill's load (two-worker runs at load 6-7 aborted clean canaries on their p99 events and
#: missed a 5 % tail), and beside runbook 01's pipeline DAG a drill's load generator fell to 95 % of
#: its rate. Other tests still run beside a drill. A test marked ``drills`` holds the lock from its
#: setup to its teardown; a module fixture that runs drills among other work (the e2e runbook
#: sequence) takes it with :func:`drills_lock` around the drills and the heavy work alone.
DRILLS_LOCK = Path(tempfile.gettempdir()) / "clinops-test-drills.lock"


@contextmanager
def drills_lock() -> Iterator[None]:
    """Hold :data:`DRILLS_LOCK`: an exclusive ``flock``, which the kernel drops if the process dies."""
    with open(DRILLS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Hold :func:`drills_lock` through the setup, call and teardown of a ``drills`` test, so its
    module's platform starts and stops under it too."""
    if item.get_closest_marker("drills") is None:
        yield
        return
    with drills_lock():
        yield


def _tier(keywords: Mapping[str, object]) -> str | None:
    tiers = [t for t in TIERS if t in keywords]
    return tiers[-1] if tiers else None


#: ``CLINOPS_TEST_TIMELINE=<file>`` appends one JSON line per test phase (node id, phase, start,
#: stop, worker): where a two-worker run's wall time went, which the per-tier sums cannot show.
TIMELINE_VARIABLE = "CLINOPS_TEST_TIMELINE"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = _tier(report.keywords)
    if tier is not None:
        _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
    timeline = os.environ.get(TIMELINE_VARIABLE)
    if timeline and "PYTEST_XDIST_WORKER" not in os.environ:  # the controller writes its workers' lines
        node = getattr(report, "node", None)  # set by pytest-xdist on the controller
        worker = node.gateway.id if node is not None else "main"
        phase = {"nodeid": report.nodeid, "when": report.when, "start": report.start,
                 "stop": report.stop, "worker": worker, "outcome": report.outcome}
        with open(timeline, "a") as out:
            out.write(json.dumps(phase) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Time per tier, so every run (CI's too) says where its minutes went."""
    if _TIER_SECONDS:
        spent = {t: divmod(round(_TIER_SECONDS[t]), 60) for t in TIERS if t in _TIER_SECONDS}
        shown = ", ".join(f"{t} {m} min {s} s" for t, (m, s) in spent.items())
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        terminalreporter.write_line(f"time per tier (sum of test durations): {shown}; load average {load}")


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


def processes_of(state_dir: Path) -> list[str]:
    """Live processes (other than this one) started for the platform whose state dir is ``state_dir``.

    Every component inherits the environment of the ``clinops`` process that started it, so
    ``CLINOPS_STATE_DIR=<our state dir>`` in /proc/<pid>/environ identifies them whatever they
    run as (PostgreSQL runs as ``postgres``).
    """
    marker = f"CLINOPS_STATE_DIR={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if marker not in environ.split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue  # a zombie holds no port and no resources; its parent reaps it
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        found.append(f"{entry.name}: {cmd[:200]}")
    return found


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


# -- one local platform per test process -------------------------------------------------------------
@dataclass
class SharedPlatform:
    """The session's local platform: the target object and what a ``clinops`` subprocess needs."""

    target: LocalTarget  # imported for type checking only: unit-only sessions never import it
    root: Path
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return self.target.settings


@pytest.fixture(scope="session")
def shared_platform(port_allocator: PortAllocator) -> Iterator[SharedPlatform]:
    """Nothing is started here (``local_platform`` brings levels up on first use); torn down once
    at the end of the session, leaving no process or port of its block."""
    from clinops_lib.config import Settings
    from clinops_lib.targets.local.target import LocalTarget

    block = port_allocator.block()
    root = enterable_tmpdir("clinops-shared-")
    settings = Settings(state_dir=root / "state", ports=block.portmap(), evidence_dir=root / "evidence")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINOPS_", "KUBECONFIG"))}
    env.update(CLINOPS_PORT_BASE=str(block.base), CLINOPS_STATE_DIR=str(settings.state_dir),
               CLINOPS_EVIDENCE_DIR=str(settings.evidence_dir))
    target = LocalTarget(settings)
    try:
        yield SharedPlatform(target, root, env)
    finally:
        try:
            target.down(purge=True)
            target.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            port_allocator.release(block)


@pytest.fixture(scope="module")
def local_platform(shared_platform: SharedPlatform) -> Callable[[Iterable[int]], SharedPlatform]:
    """``local_platform(levels)``: the shared platform with ``levels`` up and no canary left over."""

    def ready(levels: Iterable[int]) -> SharedPlatform:
        from clinops_lib.drills.abort import abort_release, stray_canaries, track_rows

        target = shared_platform.target
        target.up(list(levels))
        for row in stray_canaries(track_rows(target)):
            abort_release(target, row.service)
        return shared_platform

    return ready
