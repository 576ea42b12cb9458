"""Session fixtures: one real redis-server, one local Ray, one set of Serve applications per run."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
import yaml
from ray import serve

from actors.fleet import Fleet
from chorus.persona import PersonaSpec
from chorus.runtime import connect_ray, deploy_local_tier, start_serve
from chorus.services import free_port, throwaway_redis
from chorus.settings import Settings, load_settings


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server: CHORUS_TEST_REDIS_URL (what .ci/run starts) or one started here."""
    with contextlib.ExitStack() as stack:
        url = os.environ.get("CHORUS_TEST_REDIS_URL")
        if not url:
            if shutil.which("redis-server") is None:
                pytest.fail("redis-server is not installed: run `bash .ci/run` (it installs it)")
            url = stack.enter_context(throwaway_redis())
        redis.Redis.from_url(url).flushdb()
        yield url


@pytest.fixture()
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


# --- Ray, Serve and the local tier -------------------------------------------------------------

TEST_MODEL = "gemma-3-270m"
# The premium tier in tests is the project's own OpenAI-compatible endpoint under a priced name,
# so real HTTP goes through the real `openai` client without any outside service.
PREMIUM_PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 12.0}
# The local tier's service key; the premium tier in tests is that same tier, so it sends it too.
SERVICE_KEY = "test-service-key"


@pytest.fixture(scope="session")
def serve_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def settings(redis_url: str, serve_port: int) -> Settings:
    base = f"http://127.0.0.1:{serve_port}/llm/v1"
    return load_settings(
        redis={"url": redis_url, "key_prefix": "chorustest"},
        serve={"port": serve_port},
        local={"base_url": base, "api_key": SERVICE_KEY, "model": TEST_MODEL, "threads": 2},
        premium={"base_url": base, "api_key": SERVICE_KEY, "model": TEST_MODEL},
        pricing={"models": {TEST_MODEL: PREMIUM_PRICE}, "local_per_mtok": 0.05},
        router={"timeout_s": 60, "max_retries": 1, "backoff_s": 0.05},
        # A private Ray: never join a cluster someone started with `ray start` on this machine.
        ray_address="local",
    )


@pytest.fixture(scope="session")
def ray_serve(settings: Settings) -> Iterator[Settings]:
    connect_ray(settings)
    start_serve(settings)
    yield settings
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def local_tier(ray_serve: Settings) -> str:
    """The llama.cpp tier deployed on Serve; returns its OpenAI base URL."""
    deploy_local_tier(ray_serve)
    return ray_serve.local.base_url


# --- Personas and the fleet --------------------------------------------------------------------

EXAMPLE_PERSONA = Path(__file__).resolve().parents[1] / "personas" / "ember-and-oak-coffee.yaml"


def make_persona(persona_id: str, **changes: Any) -> PersonaSpec:
    """A real example persona under another id, with field changes for the test at hand."""
    data = yaml.safe_load(EXAMPLE_PERSONA.read_text())
    data.update(id=persona_id, **changes)
    return PersonaSpec.model_validate(data)


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def fleet_settings(local_tier: str, settings: Settings) -> Settings:
    """Settings for fleet tests: the shared local tier, a long idle timeout (tests passivate on
    purpose), and no background scheduler: the scheduler test drives it with its own clock."""
    fleet = settings.fleet.model_copy(update={"idle_passivate_s": 600, "schedule_interval_s": 0})
    return settings.model_copy(update={"fleet": fleet})


@pytest.fixture()
async def fleet(fleet_settings: Settings) -> AsyncIterator[Fleet]:
    fleet = Fleet(fleet_settings)
    yield fleet
    await fleet.redis.aclose()


# --- The HTTP API ------------------------------------------------------------------------------

# Small enough that tests reach the limits; the rest are the product's defaults.
API_LIMITS = {
    "max_pending_jobs": 8,
    "max_body_bytes": 16 * 1024,
    "sync_timeout_s": 300.0,
    "sse_keepalive_s": 2.0,
}


@pytest.fixture(scope="session")
def api_settings(fleet_settings: Settings) -> Settings:
    return fleet_settings.model_copy(update={"api": fleet_settings.api.model_copy(update=API_LIMITS)})


@pytest.fixture(scope="session")
def api(api_settings: Settings) -> str:
    """The Chorus API deployed once on the shared Serve, next to the local tier; its base URL."""
    from chorus.runtime import api_url, deploy_api

    deploy_api(api_settings)
    return api_url(api_settings)


async def create_key(settings: Settings, role: str, name: str = "tests") -> str:
    """A key made straight in Redis, the way `chorus up` bootstraps the first admin key."""
    from chorus.auth import KeyStore
    from chorus.store import async_redis, keys_for

    client = async_redis(settings)
    try:
        _, token = await KeyStore(client, keys_for(settings)).create(role, name)  # type: ignore[arg-type]
        return token
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
async def admin_key(api: str, api_settings: Settings) -> str:
    return await create_key(api_settings, "admin")


def hook_only_budget(settings: Settings, spec: PersonaSpec) -> float:
    """A daily budget with room for the hook's worst case and not the body's: a job of the
    persona (all steps local, no cache) pays for its hook, then stops with budget_exceeded."""
    from chorus.llm.pricing import PriceTable
    from chorus.llm.router import max_prompt_tokens
    from graphs.content.prompts import hook_messages

    worst = PriceTable(settings.pricing).cost(
        "local", settings.local.model, max_prompt_tokens(hook_messages(spec, spec.topics[0])), 40
    )
    return worst * 1.2


# What a Ray traceback carries and no user may see: the traceback, source paths, colour codes,
# process ids, the node's address, actor ids.
_INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|\x1b\[|\bpid[=: ]|\b\d{1,3}(\.\d{1,3}){3}\b|ray::|actor_id|RayTaskError"
)


def assert_no_internals(text: str) -> None:
    found = _INTERNALS.search(text)
    assert found is None, f"internal detail {found.group(0)!r} shown to a user: {text!r}"
