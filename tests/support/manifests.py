"""Reading the Kubernetes manifests (ray-cluster.yaml, cluster/*.yaml) the cluster tests check.

Loaded once per session and shared by the manifest tests in tests/cluster/, so each reads the same
documents, the same RayService and the same pod templates.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO_ROOT

RAY_CLUSTER_FILE = REPO_ROOT / "ray-cluster.yaml"
MANIFEST_FILES = [RAY_CLUSTER_FILE, *sorted((REPO_ROOT / "cluster").glob("*.yaml"))]
K8S_VERSION = "1.33.0"  # one of the versions kubernetes-validate ships schemas for
SECRET_NAME = "chorus-secrets"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


@cache
def docs_by_file() -> dict[Path, list[dict[str, Any]]]:
    return {path: load_docs(path) for path in MANIFEST_FILES}


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, docs in docs_by_file().items() for doc in docs]


def docs_of_kind(*kinds: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in all_docs() if doc.get("kind") in kinds]


def doc_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    meta = doc.get("metadata", {})
    name = meta.get("name") or meta.get("generateName") or "?"
    return f"{path.relative_to(REPO_ROOT)}:{doc.get('kind')}/{name}"


def rayservice() -> dict[str, Any]:
    services = [doc for doc in docs_by_file()[RAY_CLUSTER_FILE] if doc["kind"] == "RayService"]
    assert len(services) == 1
    return services[0]


def serve_config() -> dict[str, Any]:
    config = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    assert isinstance(config, dict)
    return config


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(owner id, RayCluster spec) for every RayCluster, RayService and RayJob."""
    specs = []
    for item in docs_of_kind(*CRD_FILES):
        _, doc = item
        spec = doc["spec"]
        cluster = {
            "RayCluster": spec,
            "RayService": spec.get("rayClusterConfig"),
            "RayJob": spec.get("rayClusterSpec"),
        }[doc["kind"]]
        if cluster is not None:
            specs.append((doc_id(item), cluster))
    return specs


def ray_groups(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head" or "worker", group spec) for the head group and every worker group."""
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield "worker", group


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, pod template) of every Deployment and every Ray group."""
    for item in docs_of_kind("Deployment"):
        yield doc_id(item), item[1]["spec"]["template"]
    for owner, cluster in cluster_specs():
        for node_type, group in ray_groups(cluster):
            yield f"{owner}:{group.get('groupName', node_type)}", group["template"]


def pod_containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


def rayservice_containers() -> list[dict[str, Any]]:
    """The main container of each group of the RayService's cluster."""
    cluster = rayservice()["spec"]["rayClusterConfig"]
    return [group["template"]["spec"]["containers"][0] for _, group in ray_groups(cluster)]
