"""The GPU local tier: vLLM through Ray Serve LLM.

`ray.serve.llm` refuses to import without vLLM, so it is imported only when this path is taken;
the config it receives is built here as plain data, which CPU-only machines can build and check.
Unlike the llama.cpp engine it does not sit behind `serve.llm.engine.LocalEngine`: Ray Serve LLM
brings its own server and OpenAI ingress, which match the routes of `serve/llm/server.py`.

Unlike the llama.cpp tier, this one does not check the fleet's service key: Ray Serve LLM builds
its ingress app itself, with no place for Chorus's middleware. The router sends the key anyway,
so the clients need no change once it can; until then keep the Serve port private.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from chorus.settings import LocalTierSettings


def vllm_llm_config(tier: LocalTierSettings) -> dict[str, Any]:
    """The `LLMConfig` for the local tier, in the shape `build_openai_app` takes in a Serve config."""
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": tier.model, "model_source": tier.vllm_model_source},
        "engine_kwargs": dict(tier.vllm_engine_kwargs),
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": tier.vllm_min_replicas,
                "max_replicas": tier.vllm_max_replicas,
                "target_ongoing_requests": max(1, tier.max_ongoing_requests // 2),
            },
            "max_ongoing_requests": tier.max_ongoing_requests,
        },
    }
    if tier.vllm_accelerator_type:
        config["accelerator_type"] = tier.vllm_accelerator_type
    return config


def vllm_app(tier: LocalTierSettings) -> Application:
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as exc:
        raise RuntimeError(
            "local.backend is 'vllm' but Ray Serve LLM cannot import "
            f"({exc}); install the GPU extra (`pip install 'chorus[gpu]'`) on GPU nodes, "
            "or set CHORUS_LOCAL__BACKEND=llama_cpp"
        ) from None
    llm_config = LLMConfig(**vllm_llm_config(tier))
    app: Application = build_openai_app({"llm_configs": [llm_config]})
    return app
