"""Local-tier settings → a Ray Serve application (as Ray Serve LLM's `core/server/builder.py`).

`local_tier_app` picks the backend the settings name: the llama.cpp server on CPUs, or Ray Serve
LLM with vLLM on GPUs (imported only then: `ray.serve.llm` refuses to import without vLLM).
`build_local_tier_app` is the import path a Serve config names for the CPU tier.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from chorus.settings import LocalTierSettings, Settings, load_settings
from serve.llm.auth import require_service_key
from serve.llm.server import LocalTierServer


def local_tier_deployment_options(tier: LocalTierSettings) -> dict[str, Any]:
    return {
        "num_replicas": tier.replicas,
        "max_ongoing_requests": tier.max_ongoing_requests,
        # llama.cpp threads busy whole cores; reserving them keeps Ray from oversubscribing.
        "ray_actor_options": {"num_cpus": min(float(tier.threads), 1.0)},
    }


def llama_cpp_app(settings: Settings) -> Application:
    """The CPU tier: the llama.cpp engine in `LocalTierServer`, which takes the service key only."""
    require_service_key(settings.local)
    deployment: Any = LocalTierServer
    app: Application = deployment.options(**local_tier_deployment_options(settings.local)).bind(settings)
    return app


def local_tier_app(settings: Settings) -> Application:
    """The local tier the settings choose (`local.backend`)."""
    if settings.local.backend == "vllm":
        from serve.llm.engines.vllm import vllm_app

        return vllm_app(settings.local)
    return llama_cpp_app(settings)


def build_local_tier_app(args: dict[str, Any]) -> Application:
    """Serve application builder for the CPU tier (``serve.llm.builder:build_local_tier_app``).

    ``args`` override fields of the local-tier settings, e.g. ``{"replicas": 2, "threads": 4}``;
    everything else comes from the environment (CHORUS_* variables).
    """
    settings = load_settings()
    if args:
        local = LocalTierSettings.model_validate({**settings.local.model_dump(), **args})
        settings = settings.model_copy(update={"local": local})
    return llama_cpp_app(settings)
