"""Benchmark of the single-node Debian cluster (issue 13): build, create-to-Ready, idle memory.

* build (cold): the seconds the project's own build (``clinops_lib/clusters/debian/build.py``)
  took from an empty cache, as it recorded them in ``build.json`` next to the binaries; with
  ``--cold-build-root DIR`` everything the cluster tier builds is built here from nothing into
  ``DIR`` (what a CI machine with an empty /var/cache/clinops does: the Debian source package,
  Kubernetes ``make``, the Go modules and the Rollouts controller, Prometheus with Kubernetes
  discovery, the debootstrap base image and the three service images), each step timed with
  the load average, then ``DIR`` is removed;
  ``--cold-only`` stops there and writes ``benchmarks/results/cluster_cold_build.json``.
* create-to-Ready (binaries cached): ``DebianCluster.create()`` from nothing (fresh PKI, etcd,
  containerd state) until the node reports Ready, and until the Argo Rollouts controller is
  healthy; repeated ``--repeat`` times, each followed by ``delete`` whose leftover check must be
  empty (a run with leftovers is reported, not hidden).
* idle memory: summed RSS of every component's process tree (and containerd's shims), sampled
  ``--idle`` seconds after create, per component.

Targets: create-to-Ready < 40 s, idle memory < 1 GiB. The load average is recorded with each
run: this is a shared 2-core machine. Writes ``benchmarks/results/cluster.json``.

    .venv/bin/python benchmarks/cluster.py [--repeat 3] [--idle 20] [--cold-build-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clinops_lib.clusters.debian import BuildCache, ClusterConfig, DebianCluster  # noqa: E402
from clinops_lib.clusters.debian.build import (  # noqa: E402
    build_kubernetes,
    build_prometheus,
    build_rollouts_controller,
)
from clinops_lib.clusters.debian.images import ImageBuilder, chart_references  # noqa: E402

TARGETS = {"create_to_ready_s": 40.0, "idle_memory_gib": 1.0}


def _recorded_build(cache: BuildCache) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, folder in (("kubernetes", cache.kubernetes), ("argo_rollouts", cache.rollouts)):
        try:
            record = json.loads((folder / "build.json").read_text())
            out[name] = {
                "build_seconds": record.get("build_seconds"),
                "built_at": record.get("built_at"),
                "source": record.get("source") or record.get("module"),
            }
        except (OSError, ValueError):
            out[name] = None
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cold_build(root: Path) -> dict[str, object]:
    """Everything from nothing into ``root`` (removed afterwards), one timed step at a time."""
    if root.exists():
        raise SystemExit(f"{root} exists: the cold build needs an empty folder")
    cache = BuildCache(root)
    steps: list[dict[str, object]] = []

    def timed(name: str, fn: object) -> None:
        load = _load()
        t0 = time.monotonic()
        fn()  # type: ignore[operator]
        steps.append(
            {
                "step": name,
                "seconds": round(time.monotonic() - t0, 1),
                "load_before": load,
                "load_after": _load(),
            }
        )
        print(json.dumps(steps[-1]), flush=True)

    def say(m: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {m}", flush=True)

    t0 = time.monotonic()
    try:
        timed(
            "kubernetes (apt-get source, unpack, make, pause)", lambda: build_kubernetes(cache, progress=say)
        )
        timed(
            "argo-rollouts controller (go mod download, go build)",
            lambda: build_rollouts_controller(cache, progress=say),
        )
        timed(
            "prometheus with kubernetes_sd (go mod download, go build)",
            lambda: build_prometheus(cache, progress=say),
        )
        timed(
            "images (debootstrap base, buildah build x3)",
            lambda: ImageBuilder(ROOT, root, progress=say).build(chart_references(ROOT)),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"seconds": round(time.monotonic() - t0, 1), "steps": steps, "cpus": os.cpu_count()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--cold-build-root", type=Path, default=None)
    ap.add_argument("--cold-only", action="store_true", help="only the cold build (needs --cold-build-root)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cluster.json")
    args = ap.parse_args()

    result: dict[str, object] = {
        "benchmark": "single-node Debian cluster (clinops_lib/clusters/debian)",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    if args.cold_build_root:
        result["cold_build_here"] = _cold_build(args.cold_build_root)
        if args.cold_only:
            out = (
                args.out.with_name("cluster_cold_build.json") if args.out.name == "cluster.json" else args.out
            )
            result["command"] = (
                f".venv/bin/python benchmarks/cluster.py --cold-build-root {args.cold_build_root} --cold-only"
            )
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(json.dumps(result["cold_build_here"], indent=2))
            return 0
    cache = BuildCache()
    result["build_recorded"] = _recorded_build(cache)

    runs = []
    for i in range(args.repeat):
        cluster = DebianCluster(ClusterConfig(), progress=lambda m: print(f"  {m}", flush=True))
        load = os.getloadavg()
        t0 = time.monotonic()
        info = cluster.create()
        total = time.monotonic() - t0
        time.sleep(args.idle)
        memory = cluster.memory_bytes()
        t1 = time.monotonic()
        left = cluster.delete()
        runs.append(
            {
                "run": i + 1,
                "node_ready_s": info.seconds_to_ready,
                "create_total_s": round(total, 2),
                "phases_s": info.phases,
                "idle_memory_mib": {k: round(v / 2**20, 1) for k, v in memory.items()},
                "idle_memory_total_mib": round(sum(memory.values()) / 2**20, 1),
                "delete_s": round(time.monotonic() - t1, 2),
                "leftovers_after_delete": left,
                "load_before": [round(x, 2) for x in load],
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    ready = [r["node_ready_s"] for r in runs]
    totals = [r["create_total_s"] for r in runs]
    mem = [r["idle_memory_total_mib"] for r in runs]
    result.update(
        {
            "create_to_ready_s_max": max(ready),
            "create_to_ready_s_median": statistics.median(ready),
            "create_with_rollouts_controller_s_max": max(totals),
            "idle_memory_gib_max": round(max(mem) / 1024, 3),
            "runs": runs,
            "targets": TARGETS,
            "passed": {
                "create_to_ready_s": max(ready) < TARGETS["create_to_ready_s"],
                "idle_memory_gib": max(mem) / 1024 < TARGETS["idle_memory_gib"],
                "no_leftovers": all(not r["leftovers_after_delete"] for r in runs),
            },
            "command": f".venv/bin/python benchmarks/cluster.py --repeat {args.repeat} --idle {args.idle:g}",
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("create_to_ready_s_max", "idle_memory_gib_max", "passed")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
