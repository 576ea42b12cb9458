"""The KubeRay and core Kubernetes objects in ray-cluster.yaml and cluster/*.yaml, offline.

- every YAML document parses and names its apiVersion and kind;
- KubeRay objects validate against the CRDs in tests/data/kuberay/ (strictly: unknown fields
  fail, as with `kubectl apply`'s default server-side field validation), broken copies fail, and
  the rules KubeRay's operator enforces beyond the CRD hold;
- core objects (and the Ray pod templates) validate with kubernetes-validate;
- PodMonitors scrape ports that the Ray pods they select really have.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cluster import gen_dashboards_configmap as gen
from tests.support.manifests import (
    CRD_FILES,
    K8S_VERSION,
    MANIFEST_FILES,
    RAY_CLUSTER_FILE,
    SECRET_NAME,
    all_docs,
    cluster_specs,
    container_env,
    doc_id,
    docs_of_kind,
    load_docs,
    pod_containers,
    pod_templates,
    ray_groups,
    rayservice,
)
from tests.support.paths import REPO_ROOT

# A pinned copy of the KubeRay CRDs, so the suite runs in a clone anywhere; the workspace's shared
# copy, when it sits beside the project, is the source it must match.
SCHEMA_DIR = REPO_ROOT / "tests" / "data" / "kuberay"
SHARED_SCHEMA_DIR = REPO_ROOT.parent / "shared" / "schemas" / "kuberay"

CORE_KINDS = {"Deployment", "Service", "PersistentVolumeClaim", "Secret", "ConfigMap"}
KNOWN_KINDS = {*CRD_FILES, *CORE_KINDS, "PodMonitor", "Kustomization"}


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_yaml_document_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion/kind missing"
        assert doc["kind"] in KNOWN_KINDS, f"{path}: no check in this file covers {doc['kind']}"
        if doc["kind"] != "Kustomization":
            meta = doc.get("metadata", {})
            assert meta.get("name") or meta.get("generateName"), f"{path}: unnamed {doc['kind']}"


def test_expected_objects_exist() -> None:
    found = {
        (doc["kind"], doc["metadata"].get("name")) for _, doc in all_docs() if doc["kind"] != "Kustomization"
    }
    for expected in [
        ("RayService", "chorus"),
        ("Deployment", "chorus-redis"),
        ("Service", "chorus-redis"),
        ("PersistentVolumeClaim", "chorus-redis-data"),
        ("Secret", SECRET_NAME),
        ("ConfigMap", gen.CONFIGMAP_NAME),
        ("PodMonitor", "chorus-ray-head"),
        ("PodMonitor", "chorus-ray-workers"),
    ]:
        assert expected in found
    assert len(docs_of_kind("RayJob")) == 1


# ---------------------------------------------------------------- KubeRay CRD schemas


def _to_jsonschema(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as JSON Schema, strict about unknown fields.

    - `x-kubernetes-*` keys are left as they are (JSON Schema ignores unknown keywords); CEL rules
      (`x-kubernetes-validations`) are therefore not checked;
    - int-or-string fields come as `anyOf: [integer, string]` already; one without it gets it;
    - `nullable: true` becomes a `null` alternative of its type;
    - an object with listed `properties` and neither `additionalProperties` nor
      `x-kubernetes-preserve-unknown-fields` refuses other keys, as the API server does under
      `kubectl apply`'s default strict field validation (it would otherwise prune them silently).
    """
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _to_jsonschema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_to_jsonschema(sub) for sub in value]
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((SCHEMA_DIR / CRD_FILES[kind]).read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _to_jsonschema(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = _crd_validator(doc["kind"])
    return [
        f"{'.'.join(str(p) for p in err.absolute_path)}: {err.message}" for err in validator.iter_errors(doc)
    ]


def test_crd_schemas_are_present() -> None:
    for name in CRD_FILES.values():
        assert (SCHEMA_DIR / name).is_file(), f"missing {SCHEMA_DIR / name}"


@pytest.mark.skipif(not SHARED_SCHEMA_DIR.is_dir(), reason="no ../shared/schemas/kuberay beside this clone")
def test_pinned_crd_schemas_match_the_shared_ones() -> None:
    for name in CRD_FILES.values():
        assert (SCHEMA_DIR / name).read_bytes() == (SHARED_SCHEMA_DIR / name).read_bytes(), (
            f"tests/data/kuberay/{name} differs from {SHARED_SCHEMA_DIR / name}: copy it again"
        )


@pytest.mark.parametrize("item", docs_of_kind(*CRD_FILES), ids=doc_id)
def test_kuberay_objects_validate_against_crd(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    assert doc["apiVersion"] == "ray.io/v1"
    errors = _crd_errors(doc)
    assert not errors, "\n".join(errors)


def _break_num_cpus_type(doc: dict[str, Any]) -> None:
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0


def _break_field_name(doc: dict[str, Any]) -> None:
    cluster = doc["spec"]["rayClusterConfig"]
    cluster["workerGroupSpec"] = cluster.pop("workerGroupSpecs")


def _break_missing_group_name(doc: dict[str, Any]) -> None:
    del doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]


def _break_redis_password_inline(doc: dict[str, Any]) -> None:
    doc["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisPassword"] = "hunter2"


def _break_head_template_type(doc: dict[str, Any]) -> None:
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"] = {}


def _break_serve_config_type(doc: dict[str, Any]) -> None:
    doc["spec"]["serveConfigV2"] = yaml.safe_load(doc["spec"]["serveConfigV2"])


@pytest.mark.parametrize(
    "breaker",
    [
        _break_num_cpus_type,
        _break_field_name,
        _break_missing_group_name,
        _break_redis_password_inline,
        _break_head_template_type,
        _break_serve_config_type,
    ],
)
def test_crd_validation_rejects_broken_copies(breaker: Any) -> None:
    broken = copy.deepcopy(rayservice())
    breaker(broken)
    assert _crd_errors(broken), f"{breaker.__name__}: the broken copy passed validation"


def test_int_or_string_quantities_accept_both_forms() -> None:
    doc = copy.deepcopy(rayservice())
    container = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["cpu"] = 4
    assert not _crd_errors(doc)
    container["resources"]["limits"]["cpu"] = ["4"]
    assert _crd_errors(doc)


# ---------------------------------------------------------------- KubeRay operator rules


@pytest.mark.parametrize("owner,cluster", cluster_specs(), ids=[o for o, _ in cluster_specs()])
def test_kuberay_operator_rules(owner: str, cluster: dict[str, Any]) -> None:
    """What ray-operator's ValidateRayClusterSpec refuses, beyond the CRD schema."""
    assert cluster.get("rayVersion") == "2.60.0"
    for node_type, group in ray_groups(cluster):
        params = group.get("rayStartParams", {})
        where = f"{owner} {group.get('groupName', node_type)}"
        assert group["template"]["spec"]["containers"], f"{where}: no container"
        assert "labels" not in params, f"{where}: use the group's `labels` field"
        if group.get("resources"):
            clash = {"num-cpus", "num-gpus", "memory", "resources"} & params.keys()
            assert not clash, f"{where}: resources set both in rayStartParams and Resources"
        if "resources" in params:
            parsed = json.loads(params["resources"].strip("'\"` ").replace('\\"', '"'))
            assert isinstance(parsed, dict) and all(isinstance(v, int | float) for v in parsed.values())
        if node_type == "worker":
            assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
    head = cluster["headGroupSpec"]
    head_env = container_env(head["template"]["spec"]["containers"][0])
    assert "redis-username" not in head.get("rayStartParams", {})
    assert "REDIS_USERNAME" not in head_env
    if "gcsFaultToleranceOptions" in cluster:
        assert "redis-password" not in head.get("rayStartParams", {})
        assert "REDIS_PASSWORD" not in head_env
        assert "RAY_REDIS_ADDRESS" not in head_env


def test_rayservice_cluster() -> None:
    service = rayservice()
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", service["metadata"]["name"])
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    head_env = container_env(head["template"]["spec"]["containers"][0])
    assert {"RAY_GRAFANA_HOST", "RAY_PROMETHEUS_HOST"} <= head_env.keys()

    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"personas", "gpu"}
    personas = groups["personas"]["template"]["spec"]["containers"][0]["resources"]
    assert personas["requests"] and personas["limits"]
    gpu = groups["gpu"]
    assert str(gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert any(t.get("key") == "nvidia.com/gpu" for t in gpu["template"]["spec"].get("tolerations", []))

    ft = cluster["gcsFaultToleranceOptions"]
    assert ft["redisAddress"].split(":")[0] == "chorus-redis"
    ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": SECRET_NAME, "key": "redis-password"}


def test_rayjob_campaign() -> None:
    ((_, job),) = docs_of_kind("RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].split() == [
        "python",
        "-m",
        "cluster.campaign",
        "--personas",
        "personas/",
        "--posts-per-persona",
        "3",
        "--out",
        "/tmp/report.json",
    ]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    # Exactly one of a cluster of its own or an existing one; KubeRay deletes only its own.
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec)
    if "clusterSelector" in spec:
        assert spec["clusterSelector"].get("ray.io/cluster")
        assert spec["shutdownAfterJobFinishes"] is False
    assert isinstance(yaml.safe_load(spec.get("runtimeEnvYAML", "{}")), dict)
    name = job["metadata"].get("name") or job["metadata"]["generateName"] + "abcde"
    assert len(name) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)


# ---------------------------------------------------------------- ports and PodMonitors


def _ray_pods() -> list[tuple[str, dict[str, str], dict[str, int]]]:
    """(id, pod labels as KubeRay sets them, named container ports) of every Ray group."""
    pods = []
    for owner, cluster in cluster_specs():
        for node_type, group in ray_groups(cluster):
            template = group["template"]
            labels = {**template.get("metadata", {}).get("labels", {}), "ray.io/node-type": node_type}
            ray_container = template["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in ray_container.get("ports", []) if "name" in p}
            pods.append((f"{owner}:{group.get('groupName', node_type)}", labels, ports))
    return pods


def test_ray_pods_expose_their_ports() -> None:
    service_owner = doc_id((RAY_CLUSTER_FILE, rayservice()))
    for pod_id, labels, ports in _ray_pods():
        assert ports.get("metrics") == 8080, f"{pod_id}: no port named metrics (8080)"
        if labels["ray.io/node-type"] == "head":
            assert ports.get("dashboard") == 8265, pod_id
            assert ports.get("client") == 10001, pod_id
            assert ports.get("gcs-server") == 6379, pod_id
        if pod_id.startswith(service_owner):
            assert ports.get("serve") == 8000, pod_id
    for _, template in pod_templates():
        for container in pod_containers(template):
            for port in container.get("ports", []):
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", port.get("name", "x"))
                assert len(port.get("name", "")) <= 15


@pytest.mark.parametrize("item", docs_of_kind("PodMonitor"), ids=doc_id)
def test_podmonitor_scrapes_existing_ports(item: tuple[Path, dict[str, Any]]) -> None:
    _, monitor = item
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert endpoints and all(isinstance(ep.get("port"), str) for ep in endpoints)
    selected = [
        (pod_id, ports)
        for pod_id, labels, ports in _ray_pods()
        if all(labels.get(k) == v for k, v in selector.items())
    ]
    assert selected, f"{monitor['metadata']['name']} selects no Ray pod"
    for pod_id, ports in selected:
        for ep in endpoints:
            assert ep["port"] in ports, f"{pod_id} has no port named {ep['port']}"


def test_podmonitors_cover_head_and_workers() -> None:
    scraped: dict[str, set[int]] = {}
    for _, monitor in docs_of_kind("PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        for pod_id, labels, ports in _ray_pods():
            if all(labels.get(k) == v for k, v in selector.items()):
                scraped.setdefault(pod_id, set()).update(
                    ports[ep["port"]] for ep in monitor["spec"]["podMetricsEndpoints"]
                )
    for pod_id, labels, _ in _ray_pods():
        assert 8080 in scraped.get(pod_id, set()), f"{pod_id}: metrics port not scraped"
        if labels["ray.io/node-type"] == "head" and pod_id.startswith("ray-cluster.yaml"):
            assert {44217, 44227} <= scraped[pod_id], "head autoscaler/dashboard metrics"


# ---------------------------------------------------------------- core objects


@pytest.mark.parametrize("item", docs_of_kind(*CORE_KINDS), ids=doc_id)
def test_core_objects_validate(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("pod_id,template", list(pod_templates()), ids=[i for i, _ in pod_templates()])
def test_ray_pod_templates_validate_as_kubernetes(pod_id: str, template: dict[str, Any]) -> None:
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)


def test_kubernetes_validate_bites() -> None:
    ((_, deployment),) = docs_of_kind("Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_redis_wiring() -> None:
    ((_, service),) = [i for i in docs_of_kind("Service") if i[1]["metadata"]["name"] == "chorus-redis"]
    ((_, deployment),) = docs_of_kind("Deployment")
    ((_, pvc),) = docs_of_kind("PersistentVolumeClaim")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
    ]
    assert pvc["metadata"]["name"] in claims
    assert service["spec"]["ports"][0]["port"] == 6379


def test_kustomization_lists_local_resources() -> None:
    ((path, kustomization),) = docs_of_kind("Kustomization")
    resources = kustomization["resources"]
    assert resources
    for resource in resources:
        assert "/" not in resource and not resource.startswith(".."), resource
        assert (path.parent / resource).is_file(), resource
    assert "secrets.template.yaml" not in resources  # would overwrite the real Secret
    listed_or_documented = {*resources, "secrets.template.yaml", "rayjob-campaign.yaml", path.name}
    for manifest in (REPO_ROOT / "cluster").glob("*.yaml"):
        assert manifest.name in listed_or_documented, f"{manifest.name}: neither listed nor excluded"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_offline() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(REPO_ROOT / "cluster")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d}
    expected = {
        (doc["kind"], doc["metadata"]["name"])
        for path, doc in all_docs()
        if path.name in docs_of_kind("Kustomization")[0][1]["resources"]
    }
    assert built == expected
