"""Secrets and settings in the manifests: no secret value inline, the Secret template empty, every
Ray container given the same Chorus settings, images on the project's Ray version.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.manifests import (
    MANIFEST_FILES,
    SECRET_NAME,
    cluster_specs,
    container_env,
    docs_of_kind,
    pod_containers,
    pod_templates,
    rayservice_containers,
)
from tests.support.paths import REPO_ROOT

SECRET_ENV = re.compile(r"KEY|PASSWORD|TOKEN|SECRET|AUTH|REDIS__URL")


# ---------------------------------------------------------------- secrets and env


def test_no_secret_value_inline() -> None:
    secret_keys = set(_secret_template()["stringData"])
    for pod_id, template in pod_templates():
        for container in pod_containers(template):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if SECRET_ENV.search(var["name"]):
                    assert "value" not in var and ref, f"{pod_id}: {var['name']} must use secretKeyRef"
                if ref:
                    assert ref["name"] == SECRET_NAME and ref["key"] in secret_keys, f"{pod_id}: {ref}"
            for source in container.get("envFrom", []):
                assert "secretRef" in source or "configMapRef" in source
    for owner, cluster in cluster_specs():
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
    ((_, secret),) = docs_of_kind("Secret")
    return secret


def test_secret_template_holds_no_values() -> None:
    secret = _secret_template()
    assert secret["metadata"]["name"] == SECRET_NAME
    assert {"redis-password", "redis-url", "openai-api-key"} <= secret["stringData"].keys()
    assert all(value == "" for value in secret["stringData"].values())
    assert "data" not in secret


def test_every_ray_container_gets_the_same_chorus_settings() -> None:
    envs = [
        [var for var in container.get("env", []) if var["name"].startswith("CHORUS_")]
        for container in rayservice_containers()
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
    assert container_env(rayservice_containers()[0])["CHORUS_LOCAL__BACKEND"]["value"] in {
        "vllm",
        "llama_cpp",
    }


def test_images_match_the_ray_version() -> None:
    dockerfile = (REPO_ROOT / "cluster" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG BASE_IMAGE=rayproject/ray:2\.60\.0-py311$", dockerfile, re.M)
    assert re.search(r"^ARG RAY_VERSION=2\.60\.0$", dockerfile, re.M)
    for _, template in pod_templates():
        for container in template["spec"]["containers"]:
            if container["name"].startswith("ray-"):
                assert container["image"].startswith("ghcr.io/chorus-dev/chorus:0.1.0")
