"""The RayService's serveConfigV2: valid for Ray Serve's own schema, its import paths resolve, and
the Ray Serve LLM application fits the GPU group.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from pathlib import Path

import pytest

from tests.support.manifests import (
    RAY_CLUSTER_FILE,
    container_env,
    rayservice,
    rayservice_containers,
    serve_config,
)
from tests.support.paths import REPO_ROOT

# The builders Ray Serve LLM documents for a Serve config (importing them needs vLLM).
RAY_SERVE_LLM_BUILDERS = {"build_openai_app"}


# ---------------------------------------------------------------- Serve config


def test_serve_config_validates_with_ray_serve_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.parse_obj(serve_config())
    apps = {app.name: app for app in schema.applications}
    assert apps["chorus-api"].import_path == "serve.api.deployment:build_api_app"
    assert apps["chorus-api"].route_prefix == "/"
    assert apps["chorus-llm"].import_path == "ray.serve.llm:build_openai_app"
    assert apps["chorus-llm"].route_prefix == "/llm"


def test_serve_config_rejects_a_broken_copy() -> None:
    from ray.serve.schema import ServeDeploySchema

    broken = serve_config()
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
        app for app in serve_config()["applications"] if app["import_path"].split(":")[0] == "ray.serve.llm"
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
    (app,) = [a for a in serve_config()["applications"] if a["name"] == "chorus-llm"]
    (config,) = app["args"]["llm_configs"]
    cluster = rayservice()["spec"]["rayClusterConfig"]
    (gpu,) = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu"]
    declared = json.loads(gpu["rayStartParams"]["resources"].strip("'\"` ").replace('\\"', '"'))
    assert f"accelerator_type:{config['accelerator_type']}" in declared
    assert config["deployment_config"]["autoscaling_config"]["max_replicas"] <= gpu["maxReplicas"]
    # Clients name the model and reach the tier where the application is mounted.
    for container in rayservice_containers():
        env = container_env(container)
        assert env["CHORUS_LOCAL__MODEL"]["value"] == config["model_loading_config"]["model_id"]
        assert env["CHORUS_LOCAL__BASE_URL"]["value"].endswith(app["route_prefix"] + "/v1")


def _chorus_import_paths() -> list[str]:
    paths = [app["import_path"] for app in serve_config()["applications"]]
    # The documented switch to the llama.cpp CPU tier (commented out in serveConfigV2).
    paths.append(CPU_TIER_IMPORT_PATH)
    return [p for p in dict.fromkeys(paths) if not p.startswith("ray.serve.llm:")]


CPU_TIER_IMPORT_PATH = "serve.llm.builder:build_local_tier_app"


@pytest.mark.parametrize("import_path", _chorus_import_paths())
def test_chorus_import_paths_import(import_path: str) -> None:
    module_name, attr = import_path.split(":")
    module_file = REPO_ROOT / (module_name.replace(".", "/") + ".py")
    if not module_file.is_file():
        pytest.skip(f"{module_file.relative_to(REPO_ROOT)} is not written yet")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), import_path


def test_cpu_tier_switch_is_documented_and_valid() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = rayservice()["spec"]["serveConfigV2"]
    assert CPU_TIER_IMPORT_PATH in raw and "CHORUS_LOCAL__BACKEND=llama_cpp" in raw
    header = RAY_CLUSTER_FILE.read_text(encoding="utf-8").split("apiVersion:", 1)[0]
    assert CPU_TIER_IMPORT_PATH in header and "CHORUS_LOCAL__BACKEND=llama_cpp" in header
    config = serve_config()
    (llm,) = [a for a in config["applications"] if a["name"] == "chorus-llm"]
    llm.update(import_path=CPU_TIER_IMPORT_PATH, args={"replicas": 2, "threads": 4})
    ServeDeploySchema.parse_obj(config)
    settings = pytest.importorskip("chorus.settings")
    settings.LocalTierSettings.model_validate({"replicas": 2, "threads": 4})
