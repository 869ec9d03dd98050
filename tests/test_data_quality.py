"""Level 2's data-quality gate with the real great-expectations of ``.venv-pipeline`` (component tier).

The repository's suites (``clinops_lib/pipeline/expectations/``) must pass clean tables and fail
bad ones *naming the expectation that was not met*: each bad table below breaks exactly one clinical
rule of an otherwise clean table, and the gate must report exactly that rule, through the same
command line the DAG's ``data_quality`` task runs (``python -m clinops_lib.pipeline.quality``).
No mocks: the tables are Parquet files written here, great-expectations runs in its own process.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO

from clinops_lib.pipeline.features import ENTITY, LABEL, SUBJECT_FEATURES, TIMESTAMP

pytestmark = pytest.mark.component

PYTHON = REPO / ".venv-pipeline" / "bin" / "python"
PAIR = "expect_column_pair_values_a_to_be_greater_than_b"
NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"


def _observations() -> pd.DataFrame:
    """Six subjects, three visits each, every value inside the gateway's bounds (as the Spark job's
    cleaned output: one row per visit, complete vitals, diastolic below systolic)."""
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    rows = []
    for s in range(6):
        for visit in range(1, 4):
            rows.append({
                "id": len(rows) + 1, "study_id": "CT-001", "subject_id": f"S01-{s:04d}", "visit": visit,
                "observed_at": t0 + timedelta(days=7 * visit, hours=s),
                "received_at": t0 + timedelta(days=7 * visit, hours=s, minutes=3),
                "adverse_event": s == 2 and visit == 3,
                "systolic_bp": 118.0 + s, "diastolic_bp": 76.0 + visit, "heart_rate": 64.0 + s,
                "temperature_c": 36.7, "weight_kg": 71.5 - visit / 10,
                "alt_u_l": 22.0 if visit == 1 else None, "creatinine_mg_dl": 0.9 if visit == 1 else None,
            })
    frame = pd.DataFrame(rows)
    for col in ("observed_at", "received_at"):
        frame[col] = frame[col].astype("datetime64[us, UTC]")
    return frame


def _features() -> pd.DataFrame:
    obs = _observations()
    grouped = obs.groupby("subject_id")
    frame = pd.DataFrame({
        ENTITY: list(grouped.groups),
        "visits": grouped.size().astype(float).values,
        "systolic_bp_mean": grouped["systolic_bp"].mean().values,
        "diastolic_bp_mean": grouped["diastolic_bp"].mean().values,
        "heart_rate_mean": grouped["heart_rate"].mean().values,
        "temperature_c_max": grouped["temperature_c"].max().values,
        "weight_kg_last": grouped["weight_kg"].last().values,
        "alt_u_l_max": grouped["alt_u_l"].max().fillna(0.0).values,
        "creatinine_mg_dl_max": grouped["creatinine_mg_dl"].max().fillna(0.0).values,
        LABEL: grouped["adverse_event"].sum().astype("int64").values,
        TIMESTAMP: grouped["observed_at"].max().array,
    })
    assert list(frame.columns) == [ENTITY, *SUBJECT_FEATURES, LABEL, TIMESTAMP]
    return frame


def _gate(*args: str) -> subprocess.CompletedProcess[str]:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} missing: run `bash scripts/setup.sh`")
    return subprocess.run(
        [str(PYTHON), "-m", "clinops_lib.pipeline.quality", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )


def _summary(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = out.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {out.stderr[-2000:]}"
    return dict(json.loads(lines[-1]))


def _check_many(tables: dict[str, tuple[str, pd.DataFrame]], tmp: Path) -> dict[str, dict[str, Any]]:
    """Run the suite of each table in one great-expectations process (one import, many tables)."""
    args = {}
    for name, (suite, frame) in tables.items():
        path = tmp / f"{name}.parquet"
        frame.to_parquet(path)
        args[name] = (suite, str(path))
    code = (
        "import json, sys; from pathlib import Path; from clinops_lib.pipeline.quality import check_file;"
        "cases = json.loads(sys.argv[1]);"
        "print(json.dumps({n: check_file(Path(p), s) for n, (s, p) in cases.items()}, default=str))"
    )
    out = subprocess.run(
        [str(PYTHON), "-c", code, json.dumps(args)], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_clean_observations_pass_and_a_broken_rule_fails_naming_it(tmp_path: Path) -> None:
    clean = tmp_path / "clean.parquet"
    _observations().to_parquet(clean)
    ok = _gate("check", "--suite", "clean_observations", str(clean))
    summary = _summary(ok)
    assert ok.returncode == 0 and summary["success"] is True, summary["failed"]
    stats = summary["suites"]["clean_observations"]
    assert stats["unsuccessful_expectations"] == 0
    assert stats["evaluated_expectations"] == stats["successful_expectations"] >= 20

    bad = _observations()
    bad.loc[4, "diastolic_bp"] = bad.loc[4, "systolic_bp"]  # diastolic == systolic: a data-entry error
    path = tmp_path / "diastolic.parquet"
    bad.to_parquet(path)
    failed = _gate("check", "--suite", "clean_observations", str(path))
    summary = _summary(failed)
    assert failed.returncode == 1 and summary["success"] is False
    assert summary["failed"] == [f"clean_observations: {PAIR}(systolic_bp > diastolic_bp)"]
    assert f"expectation not met: clean_observations: {PAIR}(systolic_bp > diastolic_bp)" in failed.stdout
    row = next(r for r in summary["expectations"] if not r["success"])
    assert row["unexpected"] == 1 and row["examples"] == [[bad.loc[4, "systolic_bp"]] * 2]


def test_each_clinical_rule_fails_on_its_own(tmp_path: Path) -> None:
    def broken(change: Callable[[pd.DataFrame], None], base: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        frame = base()
        change(frame)
        return frame

    def missing_vital(f: pd.DataFrame) -> None:
        f.loc[7, "heart_rate"] = None

    def resubmission_kept_twice(f: pd.DataFrame) -> None:
        f.loc[5, ["subject_id", "visit"]] = f.loc[4, ["subject_id", "visit"]].values

    def fahrenheit(f: pd.DataFrame) -> None:
        f.loc[2, "temperature_c"] = 98.6

    def pounds_as_kg_zero(f: pd.DataFrame) -> None:
        f.loc[3, "weight_kg"] = 0.5  # the bound is exclusive: > 0.5 kg

    def extra_column(f: pd.DataFrame) -> None:
        f["site_note"] = "x"

    def duplicate_subject(f: pd.DataFrame) -> None:
        f.loc[1, ENTITY] = f.loc[0, ENTITY]

    def missing_feature(f: pd.DataFrame) -> None:
        f.loc[2, "weight_kg_last"] = None

    def more_events_than_visits(f: pd.DataFrame) -> None:
        f.loc[3, LABEL] = int(f.loc[3, "visits"]) + 1

    obs, feats = _observations, _features
    cases = {
        "missing_vital": ("clean_observations", broken(missing_vital, obs), [f"{NOT_NULL}(heart_rate)"]),
        "duplicate_visit": ("clean_observations", broken(resubmission_kept_twice, obs),
                            ["expect_compound_columns_to_be_unique(study_id, subject_id, visit)"]),
        "fahrenheit": ("clean_observations", broken(fahrenheit, obs), [f"{BETWEEN}(temperature_c)"]),
        "weight_bound": ("clean_observations", broken(pounds_as_kg_zero, obs), [f"{BETWEEN}(weight_kg)"]),
        "extra_column": ("clean_observations", broken(extra_column, obs),
                         ["expect_table_columns_to_match_set((table))"]),
        "empty": ("clean_observations", obs().iloc[0:0], ["expect_table_row_count_to_be_between((table))"]),
        "features_clean": ("subject_features", feats(), []),
        "duplicate_subject": ("subject_features", broken(duplicate_subject, feats),
                              [f"expect_column_values_to_be_unique({ENTITY})"]),
        "missing_feature": ("subject_features", broken(missing_feature, feats),
                            [f"{NOT_NULL}(weight_kg_last)"]),
        "events_over_visits": ("subject_features", broken(more_events_than_visits, feats),
                               [f"{PAIR}(visits >= {LABEL})"]),
    }
    results = _check_many({n: (suite, frame) for n, (suite, frame, _) in cases.items()}, tmp_path)
    for name, (suite, _, expected) in cases.items():
        got = results[name]
        assert got["failed"] == [f"{suite}: {e}" for e in expected], (name, got["failed"])
        assert got["success"] is (not expected), name


def test_bad_input_exits_2_naming_it_before_reading_anything(tmp_path: Path) -> None:
    unknown = _gate("check", "--suite", "no_such_suite", str(tmp_path / "x.parquet"))
    assert unknown.returncode == 2 and "no_such_suite" in _summary(unknown)["error"]
    missing = _gate("check", "--suite", "clean_observations", str(tmp_path / "absent.parquet"))
    assert missing.returncode == 2 and "absent.parquet" in _summary(missing)["error"]
    for run_id in ("../../etc", "a/b", "x\ny", ""):
        out = _gate("validate", "--run-id", run_id)
        assert out.returncode == 2, (run_id, out.stdout, out.stderr[-500:])
        assert "run id" in _summary(out)["error"]
