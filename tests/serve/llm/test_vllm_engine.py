"""The GPU path (vLLM through Ray Serve LLM): configured and checked without vLLM installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from chorus.settings import load_settings
from serve.llm.engines.vllm import vllm_app, vllm_llm_config

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def _llm_config_fields() -> set[str]:
    # ray.serve.llm cannot import without vLLM; read LLMConfig's fields from Ray's source instead.
    spec = importlib.util.find_spec("ray.llm._internal.serve.core.configs.llm_config")
    if spec is None or spec.origin is None:
        spec = importlib.util.find_spec("ray.llm._internal.serve.configs.server_models")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    body = source[source.index("class LLMConfig(") :]
    return {
        line.split(":")[0].strip()
        for line in body.splitlines()[1:400]
        if line.startswith("    ")
        and not line.startswith("     ")
        and ":" in line
        and line.strip().split(":")[0].isidentifier()
    }


def test_llm_config_is_built_from_settings() -> None:
    settings = load_settings(
        local={
            "backend": "vllm",
            "model": "gemma-3-270m",
            "vllm_model_source": "google/gemma-3-270m",
            "vllm_accelerator_type": "L4",
            "vllm_min_replicas": 1,
            "vllm_max_replicas": 3,
        }
    )
    config = vllm_llm_config(settings.local)
    assert config["model_loading_config"] == {
        "model_id": "gemma-3-270m",
        "model_source": "google/gemma-3-270m",
    }
    assert config["accelerator_type"] == "L4"
    scaling = config["deployment_config"]["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 3)
    # vLLM refuses these in engine_kwargs: the model comes from model_loading_config.
    assert not {"model", "served_model_name"} & set(config["engine_kwargs"])
    assert set(config) <= _llm_config_fields()


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed: the GPU path would really build")
def test_choosing_vllm_without_it_fails_with_a_fix() -> None:
    settings = load_settings(local={"backend": "vllm"})
    with pytest.raises(RuntimeError, match="CHORUS_LOCAL__BACKEND=llama_cpp"):
        vllm_app(settings.local)


def test_importing_the_gpu_module_leaves_ray_serve_llm_unimported() -> None:
    code = (
        "import sys, serve.llm.engines.vllm, serve.llm.builder, ops.deploy;"
        " print('ray.serve.llm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
