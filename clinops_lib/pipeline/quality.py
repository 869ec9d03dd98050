"""Level 2's data-quality gate: the repository's expectation suites, run by great-expectations.

The DAG's ``data_quality`` task runs ``python -m clinops_lib.pipeline.quality validate --run-id
<run>`` (in ``.venv-pipeline``) between the Spark job and Feast. The Spark job writes its tables
*staged* (:func:`~.features.staged`); the gate reads those objects back from S3, runs the suites,
and only when every expectation is met **publishes** them: it copies the exact versions it
validated (S3 ``CopyObject`` of that version id) to the keys Feast's offline source and the
training job read. A failing expectation publishes nothing and exits 1: the task fails, Airflow
never starts ``feast_materialize``, ``train`` or ``register`` for that run, no model is fitted on
data that broke a clinical rule, and the published table and the online store keep the last
validated data.

What is gated, and why there: the Spark job's two outputs (their version ids and sha256 recorded):

* ``clean_observations`` (:data:`~.spark_job.CLEAN_OBJECT_KEY`): the rows every feature is
  computed from. Complete vitals, diastolic below systolic, plausible ranges, one row per
  (study, subject, visit) after resubmission handling. The Spark job's cleaning already drops
  incomplete and diastolic-at-or-above-systolic rows, so those expectations check the cleaning
  itself; the ranges are *not* cleaned away: an implausible value written around the gateway's
  validation (a bulk load, a migration) stops the run for a person to look at.
* ``subject_features`` (:data:`~.features.OBJECT_KEY`): the feature table Feast's offline
  source declares and the model fits on (exact columns, one row per subject, no missing feature).

The suites are JSON in great-expectations' own format under ``expectations/`` (kept in the
repository, reviewed like code; their ranges are the gateway's field bounds, a unit test checks
that they agree). Each is run with an ephemeral context (nothing written beside the checkout, no
GX Cloud; 1.24 sends no usage statistics) on a pandas batch: the tables are per-visit rows of one study.

Results go where the evidence picks them up: ``<work dir>/validation/<run id>/result.json``
(the full great-expectations validation results of both suites plus the objects they checked)
and ``summary.md`` beside it (human-readable), and a copy of ``result.json`` in the versioned
feature-store bucket under ``validation/<run id>/``. The last output line is a one-line JSON
summary (Airflow keeps it as the task's XCom). ``check --suite NAME FILE.parquet`` runs one suite
on a local file (an operator's dry run; the component tests use it).

Exit status: 0 every expectation met, 1 an expectation failed (or the data could not be read),
2 bad input (an unknown suite, a run id that is not a safe path segment), before anything is read.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import PipelineConfig
from .features import OBJECT_KEY, staged
from .spark_job import CLEAN_OBJECT_KEY

__all__ = [
    "RUN_ID_RULE",
    "SUITES",
    "SUITES_DIR",
    "ValidatedObject",
    "expectation_rows",
    "failed_expectations",
    "load_suite",
    "main",
    "report_markdown",
    "validate_frame",
    "validate_run",
]

SUITES_DIR = Path(__file__).parent / "expectations"
#: Suite name -> the published key of the feature-store bucket it gates (in the order they are run;
#: the suite reads the staged object, :func:`~.features.staged` of the key).
SUITES: Mapping[str, str] = {"clean_observations": CLEAN_OBJECT_KEY, "subject_features": OBJECT_KEY}
#: A run id becomes a folder and an S3 key segment: Airflow's own ids (``manual__2026-...+00:00``)
#: pass, a path (``../x``) or a control character does not.
RUN_ID_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.~:+-]{0,249}$")


@dataclass(frozen=True)
class ValidatedObject:
    """The exact bytes a suite was run on: where they came from and their digest."""

    suite: str
    uri: str
    version_id: str
    sha256: str
    rows: int
    published: str = ""  # the published key's URI and new version id, "" when not published


def load_suite(name: str) -> dict[str, Any]:
    """The suite ``name`` as kept in the repository (JSON); ValueError for an unknown name."""
    if name not in SUITES:
        raise ValueError(f"unknown expectation suite {name!r} (known: {', '.join(SUITES)})")
    doc = json.loads((SUITES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    if doc.get("name") != name or not doc.get("expectations"):
        raise ValueError(f"{SUITES_DIR / (name + '.json')}: not the suite {name!r} or no expectations")
    return dict(doc)


def validate_frame(frame: Any, suite: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``suite`` (a suite document) on a pandas DataFrame; great-expectations' result as JSON."""
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    gx_suite = context.suites.add(ExpectationSuite(**dict(suite)))
    asset = context.data_sources.add_pandas("clinops").add_dataframe_asset(str(suite["name"]))
    batch = asset.add_batch_definition_whole_dataframe("whole table").get_batch(
        batch_parameters={"dataframe": frame}
    )
    result = batch.validate(gx_suite, result_format="SUMMARY")
    return dict(json.loads(json.dumps(result.to_json_dict(), default=str)))


def _columns(kwargs: Mapping[str, Any]) -> str:
    if "column" in kwargs:
        return str(kwargs["column"])
    if "column_A" in kwargs:
        op = ">=" if kwargs.get("or_equal") else ">"
        return f"{kwargs['column_A']} {op} {kwargs['column_B']}"
    if "column_list" in kwargs:
        return ", ".join(map(str, kwargs["column_list"]))
    return "(table)"


def expectation_rows(suite: str, result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per expectation of a suite's result: what was checked and what was found."""
    rows = []
    for r in result.get("results", []):
        config = r.get("expectation_config") or {}
        kwargs = config.get("kwargs") or {}
        found = r.get("result") or {}
        exc = (r.get("exception_info") or {}).get("exception_message")
        rows.append({
            "suite": suite,
            "expectation": config.get("type", ""),
            "columns": _columns(kwargs),
            "rule": (config.get("meta") or {}).get("rule", ""),
            "success": bool(r.get("success")),
            "unexpected": found.get("unexpected_count"),
            "unexpected %": None if found.get("unexpected_percent") is None
            else round(float(found["unexpected_percent"]), 3),
            "observed": found.get("observed_value") if exc is None else f"error: {exc}",
            "examples": found.get("partial_unexpected_list", [])[:5] or None,
        })
    return rows


def failed_expectations(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``suite: expectation(columns)`` for every expectation that was not met."""
    return [
        f"{row['suite']}: {row['expectation']}({row['columns']})"
        for suite, result in results.items()
        for row in expectation_rows(suite, result)
        if not row["success"]
    ]


def report_markdown(run_id: str, objects: Sequence[ValidatedObject],
                    results: Mapping[str, Mapping[str, Any]]) -> str:
    """The human-readable summary kept beside ``result.json``."""
    failed = failed_expectations(results)
    lines = [
        f"# Data-quality validation of pipeline run `{run_id}`",
        "",
        f"**{'PASSED' if not failed else 'FAILED'}**: "
        + ("every expectation met" if not failed else f"{len(failed)} expectation(s) not met"),
        "",
        "| suite | object | version | sha256 | rows | expectations met | published as |",
        "|---|---|---|---|---|---|---|",
    ]
    for obj in objects:
        stats = results.get(obj.suite, {}).get("statistics", {})
        lines.append(
            f"| {obj.suite} | {obj.uri} | {obj.version_id or '-'} | {obj.sha256[:16]}… | {obj.rows} | "
            f"{stats.get('successful_expectations', 0)}/{stats.get('evaluated_expectations', 0)} | "
            f"{obj.published or 'not published'} |"
        )
    if failed:
        lines += ["", "Not met:", ""] + [f"- {f}" for f in failed]
    return "\n".join(lines) + "\n"


def _summary(run_id: str, objects: Sequence[ValidatedObject],
             results: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, Any]:
    failed = failed_expectations(results)
    return {
        "event": "quality.passed" if not failed else "quality.failed",
        "run_id": run_id,
        "success": not failed,
        "suites": {
            suite: {k: r.get("statistics", {}).get(k) for k in
                    ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations")}
            for suite, r in results.items()
        },
        "failed": failed,
        "objects": [obj.__dict__ for obj in objects],
        "result": where,
    }


def _publish(s3: Any, bucket: str, key: str, obj: ValidatedObject) -> ValidatedObject:
    """Copy the validated version of the staged object to ``key`` (bytes and metadata unchanged)."""
    source = {"Bucket": bucket, "Key": staged(key)}
    if obj.version_id:  # exactly the version that was validated, whatever was staged since
        source["VersionId"] = obj.version_id
    done = s3.copy_object(Bucket=bucket, Key=key, CopySource=source, MetadataDirective="COPY")
    version = str(done.get("VersionId", ""))
    return replace(obj, published=f"s3://{bucket}/{key}" + (f" (version {version})" if version else ""))


def validate_run(cfg: PipelineConfig, s3: Any, run_id: str) -> dict[str, Any]:
    """Validate the Spark job's staged objects; publish them when every expectation is met; write
    and upload the result; the summary."""
    import pandas as pd

    objects: list[ValidatedObject] = []
    results: dict[str, dict[str, Any]] = {}
    for suite, key in SUITES.items():
        got = s3.get_object(Bucket=cfg.feature_bucket, Key=staged(key))
        body = got["Body"].read()
        frame = pd.read_parquet(io.BytesIO(body))
        digest = hashlib.sha256(body).hexdigest()
        uri = f"s3://{cfg.feature_bucket}/{staged(key)}"
        objects.append(ValidatedObject(suite, uri, str(got.get("VersionId", "")), digest, len(frame)))
        results[suite] = validate_frame(frame, load_suite(suite))
    if not failed_expectations(results):
        objects = [_publish(s3, cfg.feature_bucket, SUITES[o.suite], o) for o in objects]
    out = cfg.work_dir / "validation" / run_id
    out.mkdir(parents=True, exist_ok=True)
    document = {"run_id": run_id, "objects": [o.__dict__ for o in objects], "results": results}
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    # summary first, result.json last and by rename: a reader that finds result.json finds both whole
    (out / "summary.md").write_text(report_markdown(run_id, objects, results), encoding="utf-8")
    (out / "result.json.partial").write_text(text, encoding="utf-8")
    (out / "result.json.partial").replace(out / "result.json")
    key = f"validation/{run_id}/result.json"
    s3.put_object(Bucket=cfg.feature_bucket, Key=key, Body=text.encode(), ContentType="application/json")
    return _summary(run_id, objects, results, f"s3://{cfg.feature_bucket}/{key}")


def check_file(path: Path, suite: str) -> dict[str, Any]:
    """Run one suite on a local Parquet file (no S3, nothing written)."""
    import pandas as pd

    body = path.read_bytes()
    frame = pd.read_parquet(io.BytesIO(body))
    obj = ValidatedObject(suite, str(path), "", hashlib.sha256(body).hexdigest(), len(frame))
    results = {suite: validate_frame(frame, load_suite(suite))}
    summary = _summary("check", [obj], results, "")
    summary["expectations"] = expectation_rows(suite, results[suite])
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clinops_lib.pipeline.quality",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="the DAG task: both suites on the Spark job's objects in S3")
    v.add_argument("--run-id", required=True)
    c = sub.add_parser("check", help="one suite on a local Parquet file")
    c.add_argument("--suite", required=True)
    c.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "validate" and not RUN_ID_RULE.match(args.run_id):
        print(json.dumps({"event": "quality.refused", "error": f"run id {args.run_id!r} is not a safe "
                          "path segment (letters, digits, _ . ~ : + -)"}), flush=True)
        return 2
    if args.command == "check" and (args.suite not in SUITES or not args.file.is_file()):
        what = (f"unknown suite {args.suite!r} (known: {', '.join(SUITES)})" if args.suite not in SUITES
                else f"{args.file} is not a file")
        print(json.dumps({"event": "quality.refused", "error": what}), flush=True)
        return 2
    try:
        if args.command == "validate":
            cfg = PipelineConfig.from_env()
            from .spark_job import s3_client

            summary = validate_run(cfg, s3_client(cfg), args.run_id)
        else:
            summary = check_file(args.file, args.suite)
    except Exception as e:  # noqa: BLE001 - the job's exit status and last line say what failed
        print(json.dumps({"event": "quality.error", "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    for failed in summary["failed"]:
        print(f"expectation not met: {failed}", flush=True)
    print(json.dumps(summary, default=str), flush=True)
    return 0 if summary["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
