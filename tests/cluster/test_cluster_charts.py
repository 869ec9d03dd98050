"""The charts and the GitOps objects against a real Kubernetes 1.20 API server.

* Argo CD's CRDs (from the ``argo-cd/v2`` module source at the version the stack pins) are
  applied, and the rendered app-of-apps (Applications + AppProject) are created for real: the
  API server's structural-schema validation admits or rejects them.
* Every object the umbrella chart renders, in every environment, is sent as a server-side
  dry-run create. Objects whose API (group/version) this 1.20 cluster does not serve are
  listed with the reason, not hidden; every served object must be admitted.
* Every ServiceAccount the charts create is checked with SubjectAccessReview against the real
  RBAC authorizer after the charts' Roles and RoleBindings are applied: allowed exactly the
  verbs its rules grant, denied a set of things no workload may do.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from clinops_lib import catalog, charts
from clinops_lib.clusters.debian import DebianCluster
from clinops_lib.clusters.debian.build import ARGOCD_VERSION, argocd_crds

from .helpers import ensure_namespace, wait_until

pytestmark = pytest.mark.cluster

REPORT = Path(__file__).resolve().parent.parent.parent / "benchmarks" / "results" / "cluster_dry_run.json"


def _apply_crds(cluster: DebianCluster, files: list[Path]) -> list[str]:
    import yaml

    names = []
    with cluster.api() as api:
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    api.apply(doc)
                    names.append(doc["metadata"]["name"])
    return names


def _established(kube: Any, name: str) -> bool:
    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def test_argo_cd_applications_and_project_are_admitted_with_their_crds(
    debian_cluster: DebianCluster, kube: Any
) -> None:
    names = _apply_crds(debian_cluster, argocd_crds())
    assert {"applications.argoproj.io", "appprojects.argoproj.io"} <= set(names)
    for name in names:
        wait_until(f"CRD {name} Established", lambda n=name: _established(kube, n), timeout=60)
    ensure_namespace(client.CoreV1Api(kube), "argocd")
    dyn = dynamic.DynamicClient(kube)
    objects = charts.render_gitops("dev")
    kinds = Counter(o["kind"] for o in objects)
    assert kinds["AppProject"] == 1 and kinds["Application"] >= 7
    rejected = {}
    for obj in objects:
        res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        try:
            res.create(body=obj, namespace=obj["metadata"]["namespace"])
        except ApiException as e:
            rejected[f"{obj['kind']}/{obj['metadata']['name']}"] = json.loads(e.body)["message"]
    apps = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications"
    )
    assert len(apps["items"]) == kinds["Application"], rejected
    # every object, including the AppProject's whitelist entries for the core API group
    # (group: ""): a build whose JSON decoding turns "" into null fails here (see build.py)
    assert rejected == {}, rejected
    report = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    report["argocd_dev"] = {
        "kubernetes": "v1.20.2",
        "crds": f"argo-cd {ARGOCD_VERSION} module, manifests/crds",
        "admitted": sorted(
            f"{o['kind']}/{o['metadata']['name']}"
            for o in objects
            if f"{o['kind']}/{o['metadata']['name']}" not in rejected
        ),
        "rejected_by_1_20": rejected,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    # the schema is enforced: an Application without a destination is rejected by the API server
    bad = json.loads(json.dumps(objects[0]))
    bad["metadata"]["name"] = "no-destination"
    bad["spec"].pop("destination")
    with pytest.raises(ApiException) as e:
        dyn.resources.get(api_version=bad["apiVersion"], kind="Application").create(
            body=bad, namespace="argocd"
        )
    assert e.value.status == 422 and "destination" in e.value.body


def _served(dyn: Any, obj: dict[str, Any]) -> Any:
    try:
        return dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    except ResourceNotFoundError:
        return None


@pytest.mark.parametrize("env", catalog.ENVIRONMENTS)
def test_every_rendered_object_is_admitted_or_listed_as_not_on_1_20(
    env: str, debian_cluster: DebianCluster, kube: Any
) -> None:
    dyn = dynamic.DynamicClient(kube)
    objects = charts.render(env)
    for ns in [o for o in objects if o["kind"] == "Namespace"]:
        try:
            dyn.resources.get(api_version="v1", kind="Namespace").create(body=ns)
        except ApiException as e:
            assert e.status == 409, e.body  # already created by an earlier environment
    admitted, not_served, rejected = [], [], []
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        meta = obj["metadata"]
        ident = f"{obj['apiVersion']} {obj['kind']} {meta.get('namespace', '')}/{meta['name']}"
        res = _served(dyn, obj)
        if res is None:
            not_served.append(ident)
            continue
        try:
            res.create(body=obj, namespace=obj["metadata"].get("namespace"), dry_run="All")
            admitted.append(ident)
        except ApiException as e:
            reason = json.loads(e.body).get("message", e.body) if e.body else str(e)
            rejected.append(f"{ident}: HTTP {e.status} {reason[:300]}")
    report = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    report[env] = {
        "kubernetes": "v1.20.2",
        "admitted": len(admitted),
        "not_served_on_this_cluster": not_served,
        "rejected": rejected,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    assert admitted, "nothing was admitted"
    assert rejected == [], "\n".join(rejected)


def test_service_accounts_get_exactly_what_their_roles_grant(
    debian_cluster: DebianCluster, kube: Any, request: pytest.FixtureRequest
) -> None:
    """The objects it creates (not the namespaces) are deleted afterwards: later tests install the
    same charts with Helm, which refuses to adopt objects it did not create."""
    dyn = dynamic.DynamicClient(kube)
    objects = charts.render("dev")
    for obj in objects:
        if obj["kind"] in (
            "Namespace",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        ):
            res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            try:
                res.create(body=obj, namespace=obj["metadata"].get("namespace"))
            except ApiException as e:
                assert e.status == 409, e.body
            else:
                if obj["kind"] != "Namespace":
                    request.addfinalizer(
                        lambda res=res, obj=obj: res.delete(
                            name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace")
                        )
                    )
    accounts = [
        (o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "ServiceAccount"
    ]
    assert accounts
    roles = {
        (o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects if o["kind"] == "Role"
    }
    grants: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {a: [] for a in accounts}
    for rb in (o for o in objects if o["kind"] == "RoleBinding"):
        ns = rb["metadata"]["namespace"]
        role = roles[(ns, rb["roleRef"]["name"])]
        for subject in rb.get("subjects") or []:
            key = (subject.get("namespace", ns), subject["name"])
            for rule in role.get("rules") or []:
                for group in rule.get("apiGroups") or [""]:
                    for resource in rule.get("resources") or []:
                        for verb in rule.get("verbs") or []:
                            grants.setdefault(key, []).append((ns, group, resource, verb))
    authz = client.AuthorizationV1Api(kube)

    def allowed(sa: tuple[str, str], ns: str, group: str, resource: str, verb: str) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{sa[0]}:{sa[1]}",
                groups=["system:serviceaccounts", f"system:serviceaccounts:{sa[0]}", "system:authenticated"],
                resource_attributes=client.V1ResourceAttributes(
                    namespace=ns, group=group, resource=resource, verb=verb
                ),
            )
        )
        return bool(authz.create_subject_access_review(review).status.allowed)

    forbidden = [
        ("", "secrets", "list"),
        ("", "pods", "create"),
        ("apps", "deployments", "delete"),
        ("rbac.authorization.k8s.io", "rolebindings", "create"),
        ("", "pods/exec", "create"),
    ]
    problems = []
    for sa, rules in grants.items():
        for ns, group, resource, verb in rules:
            if not allowed(sa, ns, group, resource, verb):
                problems.append(f"{sa} denied {verb} {group}/{resource} in {ns} although its Role grants it")
        granted = {(g, r, v) for _, g, r, v in rules}
        for group, resource, verb in forbidden:
            if (group, resource, verb) in granted:
                continue
            for ns in {sa[0], "kube-system", "default"}:
                if allowed(sa, ns, group, resource, verb):
                    problems.append(f"{sa} allowed {verb} {group}/{resource} in {ns} without a grant")
    assert problems == [], "\n".join(problems)
