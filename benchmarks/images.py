"""Benchmark of the Debian cluster's image route (issue 13): the three service images, cold and warm.

For each buildah storage driver asked for (``--drivers overlay,vfs``): everything from an empty
cache folder (``<root>/<driver>``, removed afterwards unless ``--keep``): the debootstrap base,
``buildah build`` of ``services/*/Dockerfile`` for clinical-gateway, model-serving and
training-job (the build stage's ``pip install`` runs once: ``--layers``), each exported as a
docker-archive; then the same call again on the now warm cache (nothing may be rebuilt). Every
command the builder ran is timed (``ImageBuilder.timings``) with the load average before and
after: this is a shared 2-core machine. Writes ``benchmarks/results/images.json``.

    nice -n 10 .venv/bin/python benchmarks/images.py --root /var/tmp/clinops-images-bench \
        [--drivers overlay,vfs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clinops_lib.clusters.debian.images import STORAGE_DRIVERS, ImageBuilder, chart_references  # noqa: E402


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _say(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


def _run(root: Path, driver: str) -> dict[str, object]:
    builder = ImageBuilder(ROOT, root, progress=_say, storage_driver=driver)
    load = _load()
    t0 = time.monotonic()
    built = builder.build(chart_references(ROOT))
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "load_before": load,
        "load_after": _load(),
        "driver": builder.storage.driver,
        "driver_reason": builder.storage.reason,
        "images": {
            i.service: {
                "seconds": round(i.seconds, 1),
                "cached": i.cached,
                "archive_bytes": Path(i.archive).stat().st_size,
            }
            for i in built
        },
        "steps": [{"step": s, "seconds": round(x, 1)} for s, x in builder.timings],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--root", type=Path, required=True, help="an empty scratch folder (not /var/cache/clinops)"
    )
    ap.add_argument("--drivers", default="overlay", help=f"comma-separated, of {', '.join(STORAGE_DRIVERS)}")
    ap.add_argument("--keep", action="store_true", help="keep the scratch caches")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "images.json")
    args = ap.parse_args()
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    if not drivers or set(drivers) - set(STORAGE_DRIVERS):
        print(
            f"--drivers: expected some of {', '.join(STORAGE_DRIVERS)}, got {args.drivers!r}", file=sys.stderr
        )
        return 2
    if args.root.exists() and any(args.root.iterdir()):
        print(f"--root {args.root} is not empty: the cold build needs an empty folder", file=sys.stderr)
        return 2
    result: dict[str, object] = {
        "benchmark": "service images without Docker (clinops_lib/clusters/debian/images.py)",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "nice -n 10 .venv/bin/python benchmarks/images.py "
        f"--root {args.root} --drivers {args.drivers}",
        "runs": {},
    }
    runs: dict[str, object] = {}
    try:
        for driver in drivers:
            root = args.root / driver
            _say(f"{driver}: cold (empty cache {root})")
            cold = _run(root, driver)
            _say(f"{driver}: cold {cold['seconds']} s; warm (same cache, nothing to rebuild)")
            warm = _run(root, driver)
            if not all(i["cached"] for i in warm["images"].values()):  # type: ignore[attr-defined]
                raise SystemExit(f"{driver}: the warm run rebuilt an image: {warm['images']}")
            runs[driver] = {"cold": cold, "warm": warm}
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    result["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({d: {k: v["seconds"] for k, v in r.items()} for d, r in runs.items()}, indent=2))  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
