"""Benchmark: the clinops judge against Argo Rollouts, Flagger and Kayenta on the same records.

Simulated drills (:mod:`clinops_lib.drills.simulate`, every run from its own seed) judged by
all four rules (:mod:`clinops_lib.drills.baselines`):

* **Detection** at 10 % canary weight and 200 req/s, 330 s at that weight (long enough for
  Flagger's 5 x 60 s): errors +0.5/+1/+2/+5 pp over stable baselines of 0.1/1/5 %; latency
  x1.10/1.25/1.50/2.00 (p50 +10..100 %); a tail of +400 ms on 1/5/10 % of canary requests.
  ``--runs`` (>= 30) per point; time and canary requests from the first canary request to the
  abort, median and p90 (a run that never aborts counts as not caught: "-" when fewer than
  half / 90 % are caught).
* **False aborts** in A/A drills (canary identical to stable): 10 % for 150 s then 50 % for
  150 s (a weight change), stable error 0 / 0.1 / 1 / 5 % and a noisy latency baseline
  (load bursts slowing both versions), ``--aa`` (>= 1000) drills per cell; the rate with its
  exact 95 % Clopper-Pearson upper bound.

Writes ``benchmarks/results/judge.json`` and ``benchmarks/results/judge.html`` (plotly,
offline: plotly.js inlined). Targets (issue 11) are evaluated and written with the results.

    .venv/bin/python benchmarks/judge.py [--runs 30] [--aa 1000] [--seed 20261201]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from clinops_lib.drills.anytime import JudgeSettings  # noqa: E402
from clinops_lib.drills.baselines import ArgoRule, ClinopsRule, FlaggerRule, KayentaRule  # noqa: E402
from clinops_lib.drills.simulate import Scenario, simulate  # noqa: E402

WEIGHT, RATE, HOLD_S, STEP_S = 0.1, 200.0, 330.0, 30.0
BASE = Scenario(rate=RATE, steps=((WEIGHT, HOLD_S),))


def detection_points() -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for base in (0.001, 0.01, 0.05):
        for pp in (0.005, 0.01, 0.02, 0.05):
            points.append(
                {
                    "family": f"errors over {base * 100:g} %",
                    "effect": f"+{pp * 100:g} pp",
                    "x": pp * 100,
                    "scenario": BASE.but(stable_error=base, canary_error=base + pp),
                }
            )
    for f in (1.10, 1.25, 1.50, 2.00):
        points.append(
            {
                "family": "latency (p50)",
                "effect": f"+{(f - 1) * 100:.0f} %",
                "x": (f - 1) * 100,
                "scenario": BASE.but(canary_latency_factor=f),
            }
        )
    for frac in (0.01, 0.05, 0.10):
        points.append(
            {
                "family": "tail +400 ms",
                "effect": f"{frac * 100:g} % of requests",
                "x": frac * 100,
                "scenario": BASE.but(tail_fraction=frac, tail_add_s=0.4),
            }
        )
    return points


AA_STEPS = ((0.1, 150.0), (0.5, 150.0))
AA_CELLS = {
    "errors 0 %": Scenario(rate=RATE, steps=AA_STEPS, stable_error=0.0),
    "errors 0.1 %": Scenario(rate=RATE, steps=AA_STEPS, stable_error=0.001),
    "errors 1 %": Scenario(rate=RATE, steps=AA_STEPS, stable_error=0.01),
    "errors 5 %": Scenario(rate=RATE, steps=AA_STEPS, stable_error=0.05),
    "noisy latency, errors 0.1 %": Scenario(rate=RATE, steps=AA_STEPS, stable_error=0.001, noisy=True),
}


def judges(settings: JudgeSettings) -> list[Any]:
    return [ClinopsRule(settings), ArgoRule(), FlaggerRule(), KayentaRule()]


def _q(values: list[float], q: float) -> float | None:
    """Quantile counting uncaught runs (inf) as above every caught one; None when it is not caught."""
    v = float(np.quantile(np.asarray(values, dtype=float), q, method="higher"))
    return None if math.isinf(v) else round(v, 3)


def clopper_pearson_upper(k: int, n: int, conf: float = 0.95) -> float:
    from scipy.stats import beta

    return 1.0 if k == n else float(beta.ppf(conf, k + 1, n - k))


def run_detection(
    points: list[dict[str, Any]],
    runs: int,
    seeds: np.random.SeedSequence,
    rules: list[Any],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    out = []
    for p, ss in zip(points, seeds.spawn(len(points)), strict=True):
        t0 = time.time()
        secs: dict[str, list[float]] = {r.name: [] for r in rules}
        reqs: dict[str, list[float]] = {r.name: [] for r in rules}
        for run_seed in ss.spawn(runs):
            rec = simulate(p["scenario"], run_seed)
            first = float(rec.sent[rec.is_canary][0]) if rec.is_canary.any() else rec.first_canary_s
            for r in rules:
                at = r.decide(rec)
                if at is None:
                    secs[r.name].append(math.inf)
                    reqs[r.name].append(math.inf)
                else:
                    secs[r.name].append(max(0.0, at - first))
                    reqs[r.name].append(float(np.count_nonzero(rec.is_canary & (rec.sent <= at))))
        row: dict[str, Any] = {
            "family": p["family"],
            "effect": p["effect"],
            "x": p["x"],
            "runs": runs,
            "stable_error": p["scenario"].stable_error,
            "judges": {},
        }
        for r in rules:
            s = secs[r.name]
            row["judges"][r.name] = {
                "caught": sum(math.isfinite(v) for v in s) / runs,
                "caught_within_first_step": sum(v <= STEP_S for v in s) / runs,
                "seconds_median": _q(s, 0.5),
                "seconds_p90": _q(s, 0.9),
                "canary_requests_median": _q(reqs[r.name], 0.5),
                "canary_requests_p90": _q(reqs[r.name], 0.9),
            }
        out.append(row)
        say(
            f"detection {p['family']:<22} {p['effect']:<18} "
            + "  ".join(f"{n}: {j['seconds_median']}s/{j['caught']:.0%}" for n, j in row["judges"].items())
            + f"  ({time.time() - t0:.1f}s)"
        )
    return out


def run_aa(
    cells: dict[str, Scenario],
    drills: int,
    seeds: np.random.SeedSequence,
    rules: list[Any],
    alpha: float,
    say: Callable[[str], None],
    only: set[int] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for i, ((name, sc), ss) in enumerate(zip(cells.items(), seeds.spawn(len(cells)), strict=True)):
        if only is not None and i not in only:
            continue
        t0 = time.time()
        aborts = {r.name: 0 for r in rules}
        max_e: list[float] = []
        saw_errors = 0
        for run_seed in ss.spawn(drills):
            rec = simulate(sc, run_seed)
            saw_errors += bool(rec.failed[rec.is_canary].any() and rec.failed[~rec.is_canary].any())
            for r in rules:
                if isinstance(r, ClinopsRule):
                    j = r.judge(rec)
                    max_e.append(j.max_e)
                    aborts[r.name] += j.rejected
                else:
                    aborts[r.name] += r.decide(rec) is not None
        row: dict[str, Any] = {
            "cell": name,
            "drills": drills,
            "steps": [list(s) for s in sc.steps],
            "stable_error": sc.stable_error,
            "noisy_latency": sc.noisy,
            "drills_with_errors_on_both_versions": saw_errors,
            "clinops_max_e_value_median": float(np.median(max_e)),
            "judges": {},
        }
        for r in rules:
            k = aborts[r.name]
            row["judges"][r.name] = {
                "false_aborts": k,
                "rate": k / drills,
                "upper_95": clopper_pearson_upper(k, drills),
            }
        out.append(row)
        say(
            f"A/A {name:<28} "
            + "  ".join(f"{n}: {j['false_aborts']}/{drills}" for n, j in row["judges"].items())
            + f"  ({time.time() - t0:.1f}s)"
        )
    return out


def targets(det: list[dict[str, Any]], aa: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """The issue's targets, each with its measured value and whether it holds."""
    out: dict[str, Any] = {}
    worse = []
    aa_by_error = {r["stable_error"]: r for r in aa if not r["noisy_latency"]}
    for row in det:
        mine = row["judges"]["clinops"]
        cell = aa_by_error[row["stable_error"]]["judges"]
        for name, j in row["judges"].items():
            if name == "clinops" or j["seconds_median"] is None:
                continue
            if cell[name]["false_aborts"] > cell["clinops"]["false_aborts"]:
                continue  # "at no more false aborts": an anchor that aborts A/A drills more is no yardstick
            m = mine["seconds_median"]
            if m is None or m > j["seconds_median"]:
                worse.append(
                    f"{row['family']} {row['effect']}: clinops {m} s vs {name} {j['seconds_median']} s"
                )
    fa_mine = max(r["judges"]["clinops"]["rate"] for r in aa)
    out[
        "clinops at least as early as the fastest anchor with no more A/A false aborts (median), every point"
    ] = {"holds": not worse, "exceptions": worse}
    out["clinops false aborts no more than any anchor, every cell"] = {
        "holds": all(
            r["judges"]["clinops"]["false_aborts"] <= min(j["false_aborts"] for j in r["judges"].values())
            for r in aa
        )
    }
    out["A/A false aborts <= alpha in every cell (binomial: 95 % lower bound below alpha)"] = {
        "holds": all(r["judges"]["clinops"]["rate"] <= alpha for r in aa),
        "worst_rate": fa_mine,
    }
    out["A/A false aborts <= 1 % at the default alpha"] = {"holds": fa_mine <= 0.01, "worst_rate": fa_mine}
    five = next(r for r in det if r["family"] == "errors over 0.1 %" and r["effect"] == "+5 pp")
    m5 = five["judges"]["clinops"]["seconds_median"]
    out["+5 pp errors (over 0.1 %) median < 5 s"] = {"holds": m5 is not None and m5 < 5, "median_s": m5}
    tail = next(r for r in det if r["family"] == "tail +400 ms" and r["effect"].startswith("5 "))
    share = tail["judges"]["clinops"]["caught_within_first_step"]
    out[f"tail +400 ms on 5 %: caught within the first 10 % step ({STEP_S:g} s) in >= 95 % of runs"] = {
        "holds": share >= 0.95,
        "share": share,
    }
    return out


def figure(det: list[dict[str, Any]], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    families = list(dict.fromkeys(r["family"] for r in det))
    fig = make_subplots(rows=1, cols=len(families), subplot_titles=families, shared_yaxes=True)
    colours = {"clinops": "#1f77b4", "Argo Rollouts": "#ff7f0e", "Flagger": "#2ca02c", "Kayenta": "#d62728"}
    for col, fam in enumerate(families, start=1):
        rows = [r for r in det if r["family"] == fam]
        for name, colour in colours.items():
            ys = [r["judges"][name]["seconds_median"] for r in rows]
            fig.add_trace(
                go.Scatter(
                    x=[r["x"] for r in rows],
                    y=[y if y is not None else None for y in ys],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": colour},
                    text=[
                        f"{r['effect']}: caught {r['judges'][name]['caught']:.0%}, p90 "
                        f"{r['judges'][name]['seconds_p90']} s"
                        for r in rows
                    ],
                    hoverinfo="text+name",
                ),
                row=1,
                col=col,
            )
        unit = "pp" if fam.startswith("errors") else "%"
        fig.update_xaxes(title_text=f"effect ({unit})", row=1, col=col)
    fig.update_yaxes(
        title_text="median seconds to abort (gap = not caught in half the runs)", type="log", row=1, col=1
    )
    fig.update_layout(
        title="Time from the first canary request to abort vs effect size, 10 % weight, 200 req/s "
        "(simulated, same records for every judge)",
        height=520,
        width=1600,
    )
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def merge(paths: list[Path], out: Path, alpha: float) -> int:
    """One result from partial runs (each cell's seed depends only on its index: as one full run)."""
    det: list[dict[str, Any]] = []
    aa: list[dict[str, Any]] = []
    commands, wall = [], 0.0
    for p in paths:
        part = json.loads(p.read_text())
        det += part["detection"]
        aa += part["false_aborts"]
        commands.append(part["command"])
        wall = max(wall, part["wall_seconds"])
    order = list(AA_CELLS)
    aa.sort(key=lambda r: order.index(r["cell"]))
    settings = simulated_settings(alpha)
    result = {
        "benchmark": "judge",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ; ".join(commands) + f" ; benchmarks/judge.py --merge <the {len(paths)} parts>",
        "how": (
            "simulated per-request records (clinops_lib.drills.simulate), one SeedSequence child per run; "
            "every judge reads the same records; time = first canary request to the abort decision; run "
            "in parallel parts (same seeds as one full run) and merged"
        ),
        "settings": {
            "alpha": settings.alpha,
            "latency_rho": settings.latency_rho,
            "error_rho": settings.error_rho,
            "latency_floor_ms": settings.floor_s * 1000,
            "error_share": settings.error_share,
            "weight": WEIGHT,
            "rate": RATE,
            "hold_s": HOLD_S,
            "aa_steps": [list(s) for s in AA_STEPS],
        },
        "rules": {r.name: repr(r) for r in judges(settings)},
        "detection": det,
        "false_aborts": aa,
        "targets": targets(det, aa, settings.alpha),
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0]},
        "wall_seconds_slowest_part": wall,
    }
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    figure(det, out.with_suffix(".html"))
    print(json.dumps(result["targets"], indent=2))
    return 0


def simulated_settings(alpha: float) -> JudgeSettings:
    """The judge's settings with its comparable-load window open (every share compares latency).

    Simulated processes have no load-dependent latency, and this benchmark measures the e-process
    at 10 % (where the baselines are compared); in drills the default window (40-60 %, see
    clinops_lib/drills/anytime.py) leaves latency to the 50 % step. Errors are judged alike in both.
    """
    return JudgeSettings(alpha=alpha, latency_shares=(0.0, 1.0)).validate()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--aa", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--alpha", type=float, default=JudgeSettings().alpha)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "judge.json")
    ap.add_argument(
        "--part",
        default="",
        help="run only 'detection' and/or A/A cell indices, e.g. "
        "'detection,0' or '3,4', writing a partial JSON (seeds as in a full run)",
    )
    ap.add_argument("--merge", nargs="*", type=Path, default=[], help="combine partial JSONs into --out")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, args.out, args.alpha)
    settings = simulated_settings(args.alpha)
    rules = judges(settings)
    root = np.random.SeedSequence(args.seed)
    det_seeds, aa_seeds = root.spawn(2)
    started = time.time()

    def say(msg: str) -> None:
        print(f"{time.time() - started:7.1f}s {msg}", flush=True)

    parts = {p.strip() for p in args.part.split(",") if p.strip()}
    det = (
        run_detection(detection_points(), args.runs, det_seeds, rules, say)
        if not parts or "detection" in parts
        else []
    )
    only = {int(p) for p in parts if p.isdigit()} if parts else None
    aa = run_aa(AA_CELLS, args.aa, aa_seeds, rules, settings.alpha, say, only)
    if parts:
        partial = {
            "command": " ".join(["benchmarks/judge.py", *sys.argv[1:]]),
            "detection": det,
            "false_aborts": aa,
            "wall_seconds": round(time.time() - started, 1),
        }
        args.out.write_text(json.dumps(partial, indent=1) + "\n")
        return 0
    result = {
        "benchmark": "judge",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["benchmarks/judge.py", *sys.argv[1:]]),
        "how": (
            "simulated per-request records (clinops_lib.drills.simulate), one SeedSequence child per run; "
            "every judge reads the same records; time = first canary request to the abort decision"
        ),
        "settings": {
            "alpha": settings.alpha,
            "latency_rho": settings.latency_rho,
            "error_rho": settings.error_rho,
            "latency_floor_ms": settings.floor_s * 1000,
            "error_share": settings.error_share,
            "weight": WEIGHT,
            "rate": RATE,
            "hold_s": HOLD_S,
            "aa_steps": [list(s) for s in AA_STEPS],
            "seed": args.seed,
        },
        "rules": {r.name: repr(r) for r in rules},
        "detection": det,
        "false_aborts": aa,
        "targets": targets(det, aa, settings.alpha),
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0]},
        "wall_seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    figure(det, args.out.with_suffix(".html"))
    print(json.dumps(result["targets"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
