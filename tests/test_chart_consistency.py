"""What Helm renders agrees with what the drills read (clinops_lib.charts); envs differ where they must."""

from __future__ import annotations

import re

import pytest
import yaml

from clinops_lib import _chart_checks as checks
from clinops_lib import charts

pytestmark = pytest.mark.unit

ENVS = charts.ENVIRONMENTS


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {env: charts.render(env) for env in ENVS}


@pytest.fixture(scope="module")
def gitops() -> dict[str, list[dict]]:
    return {env: charts.render_gitops(env) for env in ENVS}


def _one(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("env", ENVS)
def test_rollout_steps_equal_what_the_drills_read(env: str, rendered: dict[str, list[dict]]) -> None:
    rollout = _one(rendered[env], "Rollout", "clinical-gateway")
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["steps"] == charts.canary_steps("clinical-gateway", env)
    istio = canary["trafficRouting"]["istio"]
    vs = _one(rendered[env], "VirtualService", istio["virtualService"]["name"])
    assert istio["virtualService"]["routes"] == [r["name"] for r in vs["spec"]["http"]]
    dr = _one(rendered[env], "DestinationRule", istio["destinationRule"]["name"])
    subsets = {s["name"] for s in dr["spec"]["subsets"]}
    rule = istio["destinationRule"]
    assert {rule["canarySubsetName"], rule["stableSubsetName"]} == subsets
    analysis = canary["analysis"]
    assert 0 < analysis["startingStep"] < len(canary["steps"])
    names = {t["templateName"] for t in analysis["templates"]}
    ns = rollout["metadata"]["namespace"]
    assert names == {o["metadata"]["name"] for o in rendered[env]
                     if o["kind"] == "AnalysisTemplate" and o["metadata"]["namespace"] == ns}
    args = {a["name"]: a["value"] for a in analysis["args"]}
    version = charts.service_versions(env)["clinical-gateway"]
    assert args == {"service": "clinical-gateway", "version": version}


@pytest.mark.parametrize("env", ENVS)
def test_analysis_templates_carry_the_judges_thresholds_and_queries(
        env: str, rendered: dict[str, list[dict]]) -> None:
    t = charts.analysis_thresholds(env)
    templates = [o for o in rendered[env] if o["kind"] == "AnalysisTemplate"]
    assert len(templates) == 2 * len(charts.SERVICES)  # one pair per service namespace
    for tpl in templates:
        (metric,) = tpl["spec"]["metrics"]
        assert charts.duration_seconds(metric["interval"]) == t["interval"]
        assert (metric["count"], metric["failureLimit"], metric["inconclusiveLimit"]) == (
            t["count"], t["failure_limit"], t["inconclusive_limit"])
        limit = float(re.findall(r"[0-9.]+$", metric["successCondition"])[0])
        if tpl["metadata"]["name"] == "success-rate":
            assert limit == t["success_rate_min"] and ">=" in metric["successCondition"]
            assert "<" in metric["failureCondition"]
        else:
            assert limit == t["latency_p95_max_seconds"] and "<=" in metric["successCondition"]
            assert ">" in metric["failureCondition"]
        assert float(re.findall(r"[0-9.]+$", metric["failureCondition"])[0]) == limit
        # The template's PromQL with args substituted is what analysis_queries returns.
        key = "success_rate" if tpl["metadata"]["name"] == "success-rate" else "latency_p95"
        for service in charts.SERVICES:
            resolved = (metric["provider"]["prometheus"]["query"]
                        .replace("{{args.service}}", service).replace("{{args.version}}", "9.9.9"))
            assert resolved == charts.analysis_queries(env, service, "9.9.9")[key]


def test_analysis_queries_use_the_contract_metric_names() -> None:
    q = charts.analysis_queries("dev", "model-serving", "2.1.0")
    assert q["latency_p95"] == ('histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket'
                                '{service="model-serving",version="2.1.0"}[1m])) by (le))')
    assert 'http_requests_total{service="model-serving",version="2.1.0",code!~"5.."}' in q["success_rate"]
    assert "version" not in "".join(charts.analysis_queries("dev", "model-serving").values())


@pytest.mark.parametrize("env", ENVS)
def test_blue_green_equals_what_the_drills_read(env: str, rendered: dict[str, list[dict]]) -> None:
    bg = _one(rendered[env], "Rollout", "model-serving")["spec"]["strategy"]["blueGreen"]
    want = charts.blue_green("model-serving", env)
    assert bg["autoPromotionEnabled"] == want["auto_promotion_enabled"]
    assert bg["scaleDownDelaySeconds"] == want["scale_down_delay_seconds"]
    assert bg["prePromotionAnalysis"] == want["pre_promotion_analysis"]
    assert bg["postPromotionAnalysis"] == want["post_promotion_analysis"]
    for svc in (bg["activeService"], bg["previewService"]):
        _one(rendered[env], "Service", svc)
    assert (bg["activeService"], bg["previewService"]) == (want["active_service"], want["preview_service"])


@pytest.mark.parametrize("env", ENVS)
def test_image_tags_pinned_and_equal_to_service_versions(env: str, rendered: dict[str, list[dict]]) -> None:
    versions = charts.service_versions(env)
    for owner, labels, spec in checks.pod_templates(rendered[env]):
        for c in spec["containers"]:
            repo, _, tag = c["image"].rpartition(":")
            assert repo and tag and tag != "latest" and "/" not in tag, c["image"]
        name = owner["metadata"]["name"]
        if owner["kind"] == "Rollout":
            assert spec["containers"][0]["image"].endswith(f":{versions[name]}")
            assert labels["version"] == versions[name]
            env_vars = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            assert env_vars["CLINOPS_SERVICE_VERSION"] == versions[name]
    spark = next(o for o in rendered[env] if o["kind"] == "SparkApplication")
    assert not spark["spec"]["image"].endswith((":latest", ":"))


@pytest.mark.parametrize("env", ENVS)
def test_every_service_is_reachable_only_through_network_policy_allows(
        env: str, rendered: dict[str, list[dict]]) -> None:
    objs = rendered[env]
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    pods = list(checks.pod_templates(objs))
    services = [o for o in objs if o["kind"] == "Service"]
    assert services
    for svc in services:
        ns = svc["metadata"]["namespace"]
        selected = [labels for owner, labels, _ in pods if owner["metadata"]["namespace"] == ns
                    and checks.selector_matches(svc["spec"]["selector"], labels)]
        assert selected, f"Service {svc['metadata']['name']} selects no pods"
        in_ns = [p for p in policies if p["metadata"]["namespace"] == ns]
        deny = [p for p in in_ns if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
                and "Ingress" in p["spec"]["policyTypes"] and not p["spec"].get("egress")]
        assert deny, f"no default deny in {ns}"
        for labels in selected:
            allows = [p for p in in_ns if p["spec"].get("ingress")
                      and checks.selector_matches(p["spec"]["podSelector"].get("matchLabels"), labels)]
            assert allows, f"pods of Service {svc['metadata']['name']} have no ingress allow"
            ports = {port["port"] for p in allows for r in p["spec"]["ingress"] for port in r["ports"]}
            target = {int(p["targetPort"]) if str(p["targetPort"]).isdigit() else p["targetPort"]
                      for p in svc["spec"]["ports"]}
            container_ports = {cp["containerPort"] for owner, lab, spec in pods if lab is labels
                               for c in spec["containers"] for cp in c.get("ports", [])
                               if cp.get("name") in target or cp["containerPort"] in target}
            assert container_ports and container_ports <= ports, (svc["metadata"]["name"], ports)


@pytest.mark.parametrize("env", ENVS)
def test_every_namespace_has_default_deny_both_ways(env: str, rendered: dict[str, list[dict]]) -> None:
    namespaces = {o["metadata"]["name"] for o in rendered[env] if o["kind"] == "Namespace"}
    denied = {p["metadata"]["namespace"] for p in rendered[env] if p["kind"] == "NetworkPolicy"
              and p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
              and not p["spec"].get("ingress") and not p["spec"].get("egress")}
    assert denied == namespaces


def test_prod_differs_from_dev_where_it_must(rendered: dict[str, list[dict]],
                                             gitops: dict[str, list[dict]]) -> None:
    prod_steps = charts.canary_steps("clinical-gateway", "prod")
    assert prod_steps == [{"setWeight": 10}, {"pause": {"duration": "15m"}}, {"setWeight": 50},
                          {"pause": {"duration": "10m"}}, {"setWeight": 100}]
    dev_pauses = [charts.duration_seconds(s["pause"]["duration"])
                  for s in charts.canary_steps("clinical-gateway", "dev") if "pause" in s]
    assert dev_pauses and max(dev_pauses) <= 60
    assert charts.analysis_thresholds("dev")["interval"] == 10
    assert charts.blue_green("model-serving", "prod")["auto_promotion_enabled"] is False
    assert charts.blue_green("model-serving", "staging")["auto_promotion_enabled"] is False  # staging rehearses the signed manual promotion
    assert charts.blue_green("model-serving", "dev")["auto_promotion_enabled"] is True
    for env in ENVS:
        apps = [o for o in gitops[env] if o["kind"] == "Application"]
        automated = [a for a in apps if "automated" in a["spec"]["syncPolicy"]]
        if env == "prod":
            assert automated == [], "prod must be synced manually"
        else:
            assert len(automated) == len(apps)
            policy = {"prune": True, "selfHeal": True}
            assert all(a["spec"]["syncPolicy"]["automated"] == policy for a in apps)


@pytest.mark.parametrize("env", ENVS)
def test_app_of_apps_orders_levels_by_sync_wave(env: str, gitops: dict[str, list[dict]]) -> None:
    objs = gitops[env]
    project = next(o for o in objs if o["kind"] == "AppProject")
    level_apps = [o for o in objs
                  if o["kind"] == "Application" and "clinops.io/level" in o["metadata"]["labels"]]
    waves = {a["metadata"]["labels"]["clinops.io/level"]:
             int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for a in level_apps}
    assert [lvl for lvl, _ in sorted(waves.items(), key=lambda kv: kv[1])] == list(charts.LEVELS)
    assert len(set(waves.values())) == len(charts.LEVELS)
    for app in level_apps:
        level = app["metadata"]["labels"]["clinops.io/level"]
        assert app["spec"]["project"] == project["metadata"]["name"]
        assert app["spec"]["source"]["repoURL"] in project["spec"]["sourceRepos"]
        assert {"server": app["spec"]["destination"]["server"],
                "namespace": app["spec"]["destination"]["namespace"]} in project["spec"]["destinations"]
        enabled = {k: v["enabled"] for k, v in app["spec"]["source"]["helm"]["valuesObject"].items()}
        assert [k for k, v in enabled.items() if v and k in charts.LEVELS] == [level]
        assert app["spec"]["source"]["helm"]["valueFiles"] == ["values.yaml", f"values-{env}.yaml"]
    # The first level owns the namespace baseline; every kind the platform renders is whitelisted.
    assert [a["metadata"]["labels"]["clinops.io/level"] for a in level_apps
            if a["spec"]["source"]["helm"]["valuesObject"]["baseline"]["enabled"]] == ["infrastructure"]
    allowed = {(w["group"], w["kind"]) for w in project["spec"]["namespaceResourceWhitelist"]
               + project["spec"]["clusterResourceWhitelist"]}
    for o in charts.render(env):
        group = o["apiVersion"].rpartition("/")[0]
        assert (group, o["kind"]) in allowed, f"AppProject does not allow {group}/{o['kind']}"


def test_prometheus_rule_embeds_the_shared_rules_file(rendered: dict[str, list[dict]]) -> None:
    rule = _one(rendered["prod"], "PrometheusRule", "clinops-platform")
    assert rule["spec"] == yaml.safe_load(charts.prometheus_rules_file().read_text())
