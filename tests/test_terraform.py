"""terraform/: parsed with bc-python-hcl2 (the HCL parser checkov uses), held to the same inventory
file as the boto3 path, and scanned with checkov. No Terraform providers are needed (none can be
downloaded here).

What "single source" means, checked here:
* every key of inventory.tfvars.json is a declared variable (without a default, so a missing
  -var-file fails loudly) and is used by the configuration;
* every S3/SQS/SNS/Secrets Manager resource is a for_each drawing from those variables;
* the variable types describe exactly the fields the library validates (same names, same
  required/optional split), and the JSON conforms to them.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
from conftest import checkov_executable

from clinops_lib.config import PortMap, Settings
from clinops_lib.inventory import model as inv_mod
from clinops_lib.inventory.terraform import terraform_commands

pytestmark = pytest.mark.component

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "terraform"
INVENTORY = json.loads((TF / "inventory.tfvars.json").read_text())
LOCALSTACK_VARS = json.loads((TF / "localstack.tfvars.json").read_text())
INVENTORY_PREFIXES = ("aws_s3_", "aws_sqs_", "aws_sns_", "aws_secretsmanager_")


# -- parsing helpers ----------------------------------------------------------------------------
@cache
def _parsed() -> dict[str, dict[str, Any]]:
    out = {}
    for f in sorted(TF.glob("*.tf")):
        with open(f) as fh:
            out[f.name] = hcl2.load(fh)
    return out


def _one(v: Any) -> Any:
    """bc-python-hcl2 wraps attribute values in a one-element list; take the value out."""
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def _blocks(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every resource/data/ephemeral block across the files."""
    out = []
    for doc in _parsed().values():
        for entry in doc.get(kind, []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    out.append((rtype, name, body))
    return out


def _variables() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for doc in _parsed().values():
        for entry in doc.get("variable", []):
            out.update(entry)
    return out


def _locals() -> dict[str, str]:
    out: dict[str, str] = {}
    for doc in _parsed().values():
        for entry in doc.get("locals", []):
            out.update({k: str(_one(v)) for k, v in entry.items() if not k.startswith("__")})
    return out


def _var_refs(expr: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Variables an expression depends on, following locals transitively."""
    refs = set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", expr))
    for local in set(re.findall(r"\blocal\.([A-Za-z_]\w*)", expr)) - seen:
        refs |= _var_refs(_locals()[local], seen | {local})
    return refs


# Terraform type expressions as bc-python-hcl2 renders them, e.g.
#   ${map(object({'versioning': '${bool}', 'purpose': '${optional(string,"")}'}))}
def _split_top(s: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", ""
    for ch in s:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def parse_type(s: str) -> tuple[Any, ...]:
    s = s.strip()
    if s.startswith("${") and s.endswith("}"):
        s = s[2:-1].strip()
    if s in ("string", "number", "bool", "any"):
        return ("prim", s)
    m = re.fullmatch(r"(\w+)\((.*)\)", s, re.S)
    assert m, f"cannot parse type {s!r}"
    name, inner = m.groups()
    if name in ("list", "set", "map"):
        return (name, parse_type(inner))
    if name == "optional":
        return ("optional", parse_type(_split_top(inner)[0]))
    if name == "object":
        attrs = ast.literal_eval(inner)
        return ("object", {k: parse_type(v) for k, v in attrs.items()})
    raise AssertionError(f"unknown type constructor {name!r} in {s!r}")


def conform(value: Any, t: tuple[Any, ...], where: str) -> list[str]:
    """Where ``value`` does not fit Terraform type ``t`` (stricter than Terraform: extra
    object attributes are errors, because Terraform would silently drop them)."""
    kind = t[0]
    if kind == "optional":
        return [] if value is None else conform(value, t[1], where)
    if kind == "prim":
        ok = {"string": isinstance(value, str), "bool": isinstance(value, bool),
              "number": isinstance(value, int | float) and not isinstance(value, bool), "any": True}[t[1]]
        return [] if ok else [f"{where}: {value!r} is not a {t[1]}"]
    if kind in ("list", "set"):
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        return [p for i, v in enumerate(value) for p in conform(v, t[1], f"{where}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: not a map"]
        return [p for k, v in value.items() for p in conform(v, t[1], f"{where}.{k}")]
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    problems = [f"{where}.{k}: not declared in the variable type" for k in value if k not in t[1]]
    for attr, at in t[1].items():
        if attr not in value and at[0] != "optional":
            problems.append(f"{where}.{attr}: required by the variable type but missing")
        elif attr in value:
            problems += conform(value[attr], at, f"{where}.{attr}")
    return problems


def _var_type(name: str) -> tuple[Any, ...]:
    return parse_type(str(_one(_variables()[name]["type"])))


# -- tests ----------------------------------------------------------------------------------------
def test_every_tf_file_parses() -> None:
    assert {"main.tf", "variables.tf", "outputs.tf", "providers.tf", "eks.tf"} <= set(_parsed())
    assert _blocks("resource"), "no resources parsed"


def test_every_inventory_key_is_a_declared_variable_without_default_and_is_used() -> None:
    variables = _variables()
    used_text = "\n".join(p.read_text() for p in TF.glob("*.tf") if p.name != "variables.tf")
    for key in INVENTORY:
        assert key in variables, f"inventory key {key!r} is not a declared variable"
        assert "default" not in variables[key], f"variable {key!r} must come from the file, not a default"
        assert re.search(rf"\bvar\.{re.escape(key)}\b", used_text), f"variable {key!r} is never used"
    assert set(inv_mod.TOP_LEVEL_KEYS) == set(INVENTORY), "the library and the file disagree on sections"
    for key in LOCALSTACK_VARS:
        assert key in variables, f"localstack.tfvars.json key {key!r} is not a declared variable"


def test_inventory_resources_are_for_each_over_the_inventory_variables() -> None:
    declared = set(_variables())
    inventory_resources = 0
    for kind in ("resource", "data", "ephemeral"):
        for rtype, name, body in _blocks(kind):
            for meta in ("for_each", "count"):
                if meta in body:
                    refs = _var_refs(str(_one(body[meta])))
                    assert refs <= declared, f"{rtype}.{name}.{meta} uses undeclared {refs - declared}"
            if rtype.startswith(INVENTORY_PREFIXES) or (kind == "ephemeral" and rtype == "random_password"):
                inventory_resources += 1
                assert "for_each" in body, f"{rtype}.{name} is not a for_each: hard-coded inventory"
                refs = _var_refs(str(_one(body["for_each"])))
                assert refs & set(INVENTORY), f"{rtype}.{name}.for_each uses no inventory variable ({refs})"
    assert inventory_resources >= 10


def test_variable_types_match_the_json_and_the_library_fields() -> None:
    problems = [p for key in INVENTORY for p in conform(INVENTORY[key], _var_type(key), key)]
    assert problems == []

    def attrs(t: tuple[Any, ...]) -> tuple[set[str], set[str]]:
        assert t[0] == "object", t
        return set(t[1]), {k for k, v in t[1].items() if v[0] != "optional"}

    bucket = _var_type("buckets")[1]
    topic = _var_type("topics")[1]
    pairs = {
        "bucket": bucket,
        "lifecycle_rule": bucket[1]["lifecycle_rules"][1],
        "object_lock": bucket[1]["object_lock"][1],
        "queue": _var_type("queues")[1],
        "topic": topic,
        "subscription": topic[1]["subscriptions"][1],
        "secret": _var_type("secrets")[1],
    }
    for kind, t in pairs.items():
        names, required = attrs(t)
        assert names == set(inv_mod._FIELDS[kind]), f"{kind}: terraform {names} vs {inv_mod._FIELDS[kind]}"
        assert required == set(inv_mod._REQUIRED[kind]), f"{kind}: required fields differ"


def test_the_type_checker_catches_shape_errors() -> None:
    """The conformance check above must be able to fail."""
    bad = json.loads(json.dumps(INVENTORY["buckets"]))
    bad["backups"]["versioning"] = "yes"
    bad["backups"]["extra"] = 1
    del bad["airflow-logs"]["lifecycle_rules"][0]["id"]
    problems = conform(bad, _var_type("buckets"), "buckets")
    assert any("backups.versioning" in p for p in problems)
    assert any("backups.extra" in p for p in problems)
    assert any("airflow-logs.lifecycle_rules[0].id" in p for p in problems)


def test_outputs_name_what_the_services_use() -> None:
    outputs = {k: v for doc in _parsed().values() for e in doc.get("output", []) for k, v in e.items()}
    assert f'["{inv_mod.EVENTS_TOPIC}"]' in str(_one(outputs["observations_topic_arn"]["value"]))
    assert f'["{inv_mod.MODEL_BUCKET}"]' in str(_one(outputs["model_artifacts_bucket"]["value"]))
    assert inv_mod.EVENTS_TOPIC in INVENTORY["topics"] and inv_mod.MODEL_BUCKET in INVENTORY["buckets"]
    assert not any("secret_string" in str(v) for v in outputs.values()), "secret values must never be outputs"


def test_provider_is_pinned_and_switches_to_localstack_by_variable() -> None:
    tf_block = _one(_parsed()["providers.tf"]["terraform"])
    aws = _one(_one(tf_block["required_providers"])["aws"])
    assert re.fullmatch(r"~> 5\.\d+", aws["version"]), aws
    provider = next(p["aws"] for p in _parsed()["providers.tf"]["provider"] if "aws" in p)
    endpoints = _one(provider["endpoints"])
    for svc in ("s3", "sqs", "sns", "secretsmanager"):
        assert _var_refs(str(_one(endpoints[svc]))) == {"use_localstack", "localstack_endpoint"}, svc
    for flag in ("s3_use_path_style", "skip_credentials_validation", "skip_metadata_api_check"):
        assert _var_refs(str(_one(provider[flag]))) == {"use_localstack"}, flag
    assert LOCALSTACK_VARS["use_localstack"] is True
    assert _one(_variables()["use_localstack"]["default"]) is False


def test_secret_values_are_generated_write_only() -> None:
    versions = [b for t, _n, b in _blocks("resource") if t == "aws_secretsmanager_secret_version"]
    assert versions and all("secret_string" not in b and "secret_string_wo" in b for b in versions)
    assert "ephemeral.random_password" in str(_one(versions[0]["secret_string_wo"]))


def test_eks_is_behind_create_eks_defaulting_to_false() -> None:
    assert _one(_variables()["create_eks"]["default"]) is False
    eks = [(t, n, b) for t, n, b in _blocks("resource") if t.startswith(("aws_eks_", "aws_iam_"))]
    assert {t for t, _, _ in eks} >= {"aws_eks_cluster", "aws_eks_node_group", "aws_iam_role"}
    for t, n, b in eks:
        meta = b.get("count", b.get("for_each"))
        assert meta is not None and "create_eks" in _var_refs(str(_one(meta))), f"{t}.{n} ignores create_eks"


def _checkov(directory: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([str(checkov_executable()), "-d", str(directory), "--framework", "terraform",
                           "--quiet", "--compact", "-o", "json", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.stdout.strip(), f"checkov printed nothing: {proc.stderr[-2000:]}"
    data = json.loads(proc.stdout)
    report = data[0] if isinstance(data, list) else data
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return dict(report)


def _skip_list() -> dict[str, str]:
    skips: dict[str, str] = {}
    in_list = False
    for line in (TF / ".checkov.yaml").read_text().splitlines():
        if line.startswith("skip-check:"):
            in_list = True
            continue
        if in_list and line.startswith("  - "):
            m = re.fullmatch(r"\s+- (CKV2?_[A-Z]+_\d+)\s*(?:#\s*(.*))?", line)
            assert m, f"unreadable skip line: {line!r}"
            skips[m.group(1)] = (m.group(2) or "").strip()
        elif in_list and line.strip() and not line.startswith(" "):
            in_list = False
    return skips


def test_checkov_finds_no_failed_check_beyond_the_reasoned_skip_list(tmp_path: Path) -> None:
    skips = _skip_list()
    assert skips, "the skip list is empty or unreadable"
    for check_id, reason in skips.items():
        assert len(reason.split()) >= 5, f"skip {check_id} needs a one-line reason"

    configured = _checkov(TF, "--config-file", "terraform/.checkov.yaml")
    failed = [(f["check_id"], f["resource"]) for f in configured["results"]["failed_checks"]]
    assert failed == [], failed
    assert configured["summary"]["passed"] > 50, configured["summary"]

    # Without the skips, exactly the skipped checks fail: no stale skip, no unlisted failure.
    # (A copy without .checkov.yaml, which checkov would otherwise pick up by itself.)
    bare = tmp_path / "terraform"
    bare.mkdir()
    for f in [*TF.glob("*.tf"), *TF.glob("*.json")]:
        shutil.copy(f, bare / f.name)
    raw = _checkov(bare, "--skip-download", "--var-file", str(bare / "inventory.tfvars.json"))
    assert {f["check_id"] for f in raw["results"]["failed_checks"]} == set(skips)


def test_terraform_fmt_is_clean() -> None:
    tf = shutil.which("terraform")
    if tf is None:
        pytest.skip("terraform is not on PATH")
    proc = subprocess.run([tf, "fmt", "-check", "-diff", str(TF)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_terraform_command_lines_read_the_inventory_file(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, ports=PortMap(24000), project_root=ROOT, environment="staging")
    inv = inv_mod.load_inventory(env="staging")
    init, apply, env = terraform_commands(settings, inv, "terraform")
    assert init[:3] == ["terraform", f"-chdir={TF}", "init"]
    assert f"-var-file={TF / 'inventory.tfvars.json'}" in apply
    assert f"-var-file={TF / 'localstack.tfvars.json'}" in apply
    assert "-var=localstack_endpoint=http://127.0.0.1:24002" in apply
    assert "-var=environment=staging" in apply
    assert any(a.startswith("-state=") and str(tmp_path) in a for a in apply)
    assert env["TF_DATA_DIR"].startswith(str(tmp_path))
