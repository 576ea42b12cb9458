"""Offline checks of the Kubernetes manifests: ray-cluster.yaml and cluster/*.yaml.

- every YAML document parses and names its apiVersion and kind;
- KubeRay objects validate against the CRDs in tests/data/kuberay/ (strictly: unknown fields
  fail, as with `kubectl apply`'s default server-side field validation), broken copies fail, and
  the rules KubeRay's operator enforces beyond the CRD hold;
- core objects (and the Ray pod templates) validate with kubernetes-validate;
- PodMonitors scrape ports that the Ray pods they select really have;
- serveConfigV2 validates with Ray Serve's own schema and its import paths resolve;
- no secret value is inline; the Grafana dashboards ConfigMap matches its generator.
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cluster import gen_dashboards_configmap as gen

ROOT = Path(__file__).resolve().parents[1]
# A pinned copy of the KubeRay CRDs, so the suite runs in a clone anywhere; the workspace's shared
# copy, when it sits beside the project, is the source it must match.
SCHEMA_DIR = ROOT / "tests" / "data" / "kuberay"
SHARED_SCHEMA_DIR = ROOT.parent / "shared" / "schemas" / "kuberay"
RAY_CLUSTER_FILE = ROOT / "ray-cluster.yaml"
MANIFEST_FILES = [RAY_CLUSTER_FILE, *sorted((ROOT / "cluster").glob("*.yaml"))]
K8S_VERSION = "1.33.0"  # one of the versions kubernetes-validate ships schemas for

CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
CORE_KINDS = {"Deployment", "Service", "PersistentVolumeClaim", "Secret", "ConfigMap"}
KNOWN_KINDS = {*CRD_FILES, *CORE_KINDS, "PodMonitor", "Kustomization"}
SECRET_ENV = re.compile(r"KEY|PASSWORD|TOKEN|SECRET|AUTH|REDIS__URL")
SECRET_NAME = "chorus-secrets"
# The builders Ray Serve LLM documents for a Serve config (importing them needs vLLM).
RAY_SERVE_LLM_BUILDERS = {"build_openai_app"}


# ---------------------------------------------------------------- loading


def _load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


@cache
def _docs_by_file() -> dict[Path, list[dict[str, Any]]]:
    return {path: _load_docs(path) for path in MANIFEST_FILES}


def _all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, docs in _docs_by_file().items() for doc in docs]


def _docs_of_kind(*kinds: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in _all_docs() if doc.get("kind") in kinds]


def _doc_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    meta = doc.get("metadata", {})
    name = meta.get("name") or meta.get("generateName") or "?"
    return f"{path.relative_to(ROOT)}:{doc.get('kind')}/{name}"


def _rayservice() -> dict[str, Any]:
    services = [doc for doc in _docs_by_file()[RAY_CLUSTER_FILE] if doc["kind"] == "RayService"]
    assert len(services) == 1
    return services[0]


def _serve_config() -> dict[str, Any]:
    config = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    assert isinstance(config, dict)
    return config


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(owner id, RayCluster spec) for every RayCluster, RayService and RayJob."""
    specs = []
    for item in _docs_of_kind(*CRD_FILES):
        _, doc = item
        spec = doc["spec"]
        cluster = {
            "RayCluster": spec,
            "RayService": spec.get("rayClusterConfig"),
            "RayJob": spec.get("rayClusterSpec"),
        }[doc["kind"]]
        if cluster is not None:
            specs.append((_doc_id(item), cluster))
    return specs


def _groups(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head" or "worker", group spec) for the head group and every worker group."""
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield "worker", group


def _pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, pod template) of every Deployment and every Ray group."""
    for item in _docs_of_kind("Deployment"):
        yield _doc_id(item), item[1]["spec"]["template"]
    for owner, cluster in _cluster_specs():
        for node_type, group in _groups(cluster):
            yield f"{owner}:{group.get('groupName', node_type)}", group["template"]


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_document_parses(path: Path) -> None:
    docs = _load_docs(path)
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
        (doc["kind"], doc["metadata"].get("name")) for _, doc in _all_docs() if doc["kind"] != "Kustomization"
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
    assert len(_docs_of_kind("RayJob")) == 1


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


@pytest.mark.parametrize("item", _docs_of_kind(*CRD_FILES), ids=_doc_id)
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
    broken = copy.deepcopy(_rayservice())
    breaker(broken)
    assert _crd_errors(broken), f"{breaker.__name__}: the broken copy passed validation"


def test_int_or_string_quantities_accept_both_forms() -> None:
    doc = copy.deepcopy(_rayservice())
    container = doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["cpu"] = 4
    assert not _crd_errors(doc)
    container["resources"]["limits"]["cpu"] = ["4"]
    assert _crd_errors(doc)


# ---------------------------------------------------------------- KubeRay operator rules


@pytest.mark.parametrize("owner,cluster", _cluster_specs(), ids=[o for o, _ in _cluster_specs()])
def test_kuberay_operator_rules(owner: str, cluster: dict[str, Any]) -> None:
    """What ray-operator's ValidateRayClusterSpec refuses, beyond the CRD schema."""
    assert cluster.get("rayVersion") == "2.60.0"
    for node_type, group in _groups(cluster):
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
    head_env = _env(head["template"]["spec"]["containers"][0])
    assert "redis-username" not in head.get("rayStartParams", {})
    assert "REDIS_USERNAME" not in head_env
    if "gcsFaultToleranceOptions" in cluster:
        assert "redis-password" not in head.get("rayStartParams", {})
        assert "REDIS_PASSWORD" not in head_env
        assert "RAY_REDIS_ADDRESS" not in head_env


def test_rayservice_cluster() -> None:
    service = _rayservice()
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", service["metadata"]["name"])
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    head_env = _env(head["template"]["spec"]["containers"][0])
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
    ((_, job),) = _docs_of_kind("RayJob")
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
    for owner, cluster in _cluster_specs():
        for node_type, group in _groups(cluster):
            template = group["template"]
            labels = {**template.get("metadata", {}).get("labels", {}), "ray.io/node-type": node_type}
            ray_container = template["spec"]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in ray_container.get("ports", []) if "name" in p}
            pods.append((f"{owner}:{group.get('groupName', node_type)}", labels, ports))
    return pods


def test_ray_pods_expose_their_ports() -> None:
    service_owner = _doc_id((RAY_CLUSTER_FILE, _rayservice()))
    for pod_id, labels, ports in _ray_pods():
        assert ports.get("metrics") == 8080, f"{pod_id}: no port named metrics (8080)"
        if labels["ray.io/node-type"] == "head":
            assert ports.get("dashboard") == 8265, pod_id
            assert ports.get("client") == 10001, pod_id
            assert ports.get("gcs-server") == 6379, pod_id
        if pod_id.startswith(service_owner):
            assert ports.get("serve") == 8000, pod_id
    for _, template in _pod_templates():
        for container in _containers(template):
            for port in container.get("ports", []):
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", port.get("name", "x"))
                assert len(port.get("name", "")) <= 15


@pytest.mark.parametrize("item", _docs_of_kind("PodMonitor"), ids=_doc_id)
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
    for _, monitor in _docs_of_kind("PodMonitor"):
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


@pytest.mark.parametrize("item", _docs_of_kind(*CORE_KINDS), ids=_doc_id)
def test_core_objects_validate(item: tuple[Path, dict[str, Any]]) -> None:
    _, doc = item
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("pod_id,template", list(_pod_templates()), ids=[i for i, _ in _pod_templates()])
def test_ray_pod_templates_validate_as_kubernetes(pod_id: str, template: dict[str, Any]) -> None:
    wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)


def test_kubernetes_validate_bites() -> None:
    ((_, deployment),) = _docs_of_kind("Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_redis_wiring() -> None:
    ((_, service),) = [i for i in _docs_of_kind("Service") if i[1]["metadata"]["name"] == "chorus-redis"]
    ((_, deployment),) = _docs_of_kind("Deployment")
    ((_, pvc),) = _docs_of_kind("PersistentVolumeClaim")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in deployment["spec"]["template"]["spec"]["volumes"]
    ]
    assert pvc["metadata"]["name"] in claims
    assert service["spec"]["ports"][0]["port"] == 6379


def test_kustomization_lists_local_resources() -> None:
    ((path, kustomization),) = _docs_of_kind("Kustomization")
    resources = kustomization["resources"]
    assert resources
    for resource in resources:
        assert "/" not in resource and not resource.startswith(".."), resource
        assert (path.parent / resource).is_file(), resource
    assert "secrets.template.yaml" not in resources  # would overwrite the real Secret
    listed_or_documented = {*resources, "secrets.template.yaml", "rayjob-campaign.yaml", path.name}
    for manifest in (ROOT / "cluster").glob("*.yaml"):
        assert manifest.name in listed_or_documented, f"{manifest.name}: neither listed nor excluded"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_offline() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "cluster")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d}
    expected = {
        (doc["kind"], doc["metadata"]["name"])
        for path, doc in _all_docs()
        if path.name in _docs_of_kind("Kustomization")[0][1]["resources"]
    }
    assert built == expected


# ---------------------------------------------------------------- Serve config


def test_serve_config_validates_with_ray_serve_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.parse_obj(_serve_config())
    apps = {app.name: app for app in schema.applications}
    assert apps["chorus-api"].import_path == "serve.app:build_api_app"
    assert apps["chorus-api"].route_prefix == "/"
    assert apps["chorus-llm"].import_path == "ray.serve.llm:build_openai_app"
    assert apps["chorus-llm"].route_prefix == "/llm"


def test_serve_config_rejects_a_broken_copy() -> None:
    from ray.serve.schema import ServeDeploySchema

    broken = _serve_config()
    broken["applications"][1]["route_prefix"] = "/"  # two applications on one route
    with pytest.raises(ValueError):
        ServeDeploySchema.parse_obj(broken)


def _llm_config_fields() -> set[str] | None:
    """Field names of ray.serve.llm.LLMConfig, read from Ray's source (importing it needs vLLM)."""
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        return None
    source = Path(spec.origin).parent / "llm/_internal/serve/core/configs/llm_config.py"
    if not source.is_file():
        return None
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef) and node.name == "LLMConfig":
            return {
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and not stmt.target.id.startswith("_")
            }
    return None


def test_ray_serve_llm_application() -> None:
    from ray.serve.config import AutoscalingConfig

    llm_apps = [
        app for app in _serve_config()["applications"] if app["import_path"].split(":")[0] == "ray.serve.llm"
    ]
    assert llm_apps
    fields = _llm_config_fields()
    for app in llm_apps:
        module, attr = app["import_path"].split(":")
        assert module == "ray.serve.llm" and attr in RAY_SERVE_LLM_BUILDERS
        configs = app["args"]["llm_configs"]
        assert configs
        for config in configs:
            assert config["model_loading_config"]["model_id"]
            if fields is not None:
                assert set(config) <= fields, f"unknown LLMConfig keys {set(config) - fields}"
            assert not {"model", "served_model_name"} & config.get("engine_kwargs", {}).keys()
            autoscaling = config["deployment_config"]["autoscaling_config"]
            parsed = AutoscalingConfig(**autoscaling)
            assert 0 < parsed.min_replicas <= parsed.max_replicas


def test_gpu_group_fits_the_llm_config() -> None:
    (app,) = [a for a in _serve_config()["applications"] if a["name"] == "chorus-llm"]
    (config,) = app["args"]["llm_configs"]
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    (gpu,) = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    declared = json.loads(gpu["rayStartParams"]["resources"].strip("'\"` ").replace('\\"', '"'))
    assert f"accelerator_type:{config['accelerator_type']}" in declared
    assert config["deployment_config"]["autoscaling_config"]["max_replicas"] <= gpu["maxReplicas"]
    # Clients name the model and reach the tier where the application is mounted.
    for container in _rayservice_containers():
        env = _env(container)
        assert env["CHORUS_LOCAL__MODEL"]["value"] == config["model_loading_config"]["model_id"]
        assert env["CHORUS_LOCAL__BASE_URL"]["value"].endswith(app["route_prefix"] + "/v1")


def _chorus_import_paths() -> list[str]:
    paths = [app["import_path"] for app in _serve_config()["applications"]]
    # The documented switch to the llama.cpp CPU tier (commented out in serveConfigV2).
    paths.append(CPU_TIER_IMPORT_PATH)
    return [p for p in dict.fromkeys(paths) if not p.startswith("ray.serve.llm:")]


CPU_TIER_IMPORT_PATH = "serve.local_tier:build_local_tier_app"


@pytest.mark.parametrize("import_path", _chorus_import_paths())
def test_chorus_import_paths_import(import_path: str) -> None:
    module_name, attr = import_path.split(":")
    module_file = ROOT / (module_name.replace(".", "/") + ".py")
    if not module_file.is_file():
        pytest.skip(f"{module_file.relative_to(ROOT)} is not written yet")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), import_path


def test_cpu_tier_switch_is_documented_and_valid() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = _rayservice()["spec"]["serveConfigV2"]
    assert CPU_TIER_IMPORT_PATH in raw and "CHORUS_LOCAL__BACKEND=llama_cpp" in raw
    header = RAY_CLUSTER_FILE.read_text(encoding="utf-8").split("apiVersion:", 1)[0]
    assert CPU_TIER_IMPORT_PATH in header and "CHORUS_LOCAL__BACKEND=llama_cpp" in header
    config = _serve_config()
    (llm,) = [a for a in config["applications"] if a["name"] == "chorus-llm"]
    llm.update(import_path=CPU_TIER_IMPORT_PATH, args={"replicas": 2, "threads": 4})
    ServeDeploySchema.parse_obj(config)
    settings = pytest.importorskip("chorus.settings")
    settings.LocalTierSettings.model_validate({"replicas": 2, "threads": 4})


# ---------------------------------------------------------------- secrets and env


def test_no_secret_value_inline() -> None:
    secret_keys = set(_secret_template()["stringData"])
    for pod_id, template in _pod_templates():
        for container in _containers(template):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if SECRET_ENV.search(var["name"]):
                    assert "value" not in var and ref, f"{pod_id}: {var['name']} must use secretKeyRef"
                if ref:
                    assert ref["name"] == SECRET_NAME and ref["key"] in secret_keys, f"{pod_id}: {ref}"
            for source in container.get("envFrom", []):
                assert "secretRef" in source or "configMapRef" in source
    for owner, cluster in _cluster_specs():
        ft = cluster.get("gcsFaultToleranceOptions")
        if ft:
            assert "value" not in ft["redisPassword"], owner
            assert ft["redisPassword"]["valueFrom"]["secretKeyRef"]["key"] in secret_keys


def test_no_credentials_in_any_manifest_text() -> None:
    for path in MANIFEST_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("#"):
                continue
            assert not re.search(r"rediss?://[^@\s\"]*:[^@\s<$\"]+@", line), f"{path}: {line}"
            assert not re.search(r"\bsk-[A-Za-z0-9_-]{16,}", line), f"{path}: {line}"
            assert not re.search(r"\bhf_[A-Za-z0-9]{16,}", line), f"{path}: {line}"


def _secret_template() -> dict[str, Any]:
    ((_, secret),) = _docs_of_kind("Secret")
    return secret


def test_secret_template_holds_no_values() -> None:
    secret = _secret_template()
    assert secret["metadata"]["name"] == SECRET_NAME
    assert {"redis-password", "redis-url", "openai-api-key"} <= secret["stringData"].keys()
    assert all(value == "" for value in secret["stringData"].values())
    assert "data" not in secret


def _rayservice_containers() -> list[dict[str, Any]]:
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    return [group["template"]["spec"]["containers"][0] for _, group in _groups(cluster)]


def test_every_ray_container_gets_the_same_chorus_settings() -> None:
    envs = [
        [var for var in container.get("env", []) if var["name"].startswith("CHORUS_")]
        for container in _rayservice_containers()
    ]
    names = {var["name"] for var in envs[0]}
    assert {
        "CHORUS_REDIS__URL",
        "CHORUS_PREMIUM__API_KEY",
        "CHORUS_PREMIUM__BASE_URL",
        "CHORUS_PREMIUM__MODEL",
        "CHORUS_LOCAL__BACKEND",
        "CHORUS_LOCAL__BASE_URL",
        "CHORUS_LOCAL__MODEL",
    } <= names
    assert all(env == envs[0] for env in envs[1:])
    assert _env(_rayservice_containers()[0])["CHORUS_LOCAL__BACKEND"]["value"] in {"vllm", "llama_cpp"}


def test_images_match_the_ray_version() -> None:
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG BASE_IMAGE=rayproject/ray:2\.60\.0-py311$", dockerfile, re.M)
    assert re.search(r"^ARG RAY_VERSION=2\.60\.0$", dockerfile, re.M)
    for _, template in _pod_templates():
        for container in template["spec"]["containers"]:
            if container["name"].startswith("ray-"):
                assert container["image"].startswith("ghcr.io/chorus-dev/chorus:0.1.0")


# ---------------------------------------------------------------- Grafana dashboards


def test_dashboards_configmap_matches_generator() -> None:
    on_disk = (ROOT / "cluster" / "grafana-dashboards.yaml").read_text(encoding="utf-8")
    assert on_disk == gen.render(ROOT / "cluster" / "grafana"), (
        "cluster/grafana-dashboards.yaml is stale: run `python -m cluster.gen_dashboards_configmap`"
    )
    configmap = yaml.safe_load(on_disk)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((ROOT / "cluster" / "grafana").glob("*.json"))
    assert sorted(configmap["data"] or {}) == [f.name for f in files]
    for f in files:
        assert configmap["data"][f.name] == f.read_text(encoding="utf-8")


def test_dashboards_generator_round_trips_and_checks(tmp_path: Path) -> None:
    grafana = tmp_path / "grafana"
    grafana.mkdir()
    out = tmp_path / "dashboards.yaml"
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out)]) == 0
    empty = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert empty["data"] == {}
    kubernetes_validate.validate(empty, K8S_VERSION, strict=True)

    contents = {
        "fleet.json": '{\n  "title": "Fleet \\"ops\\"",\n  "panels": []\n}\n',
        "costs.json": '{"title": "Costs ✓",\t"panels": [ ]}  \n\n',
        "bare.json": "{}",
    }
    for name, text in contents.items():
        (grafana / name).write_text(text, encoding="utf-8")
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out), "--check"]) == 1
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out)]) == 0
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out), "--check"]) == 0
    configmap = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert configmap["data"] == contents
    kubernetes_validate.validate(configmap, K8S_VERSION, strict=True)

    (grafana / "bad.json").write_text("{not json", encoding="utf-8")
    assert gen.main(["--grafana-dir", str(grafana), "--out", str(out)]) == 2
