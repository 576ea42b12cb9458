"""Session fixtures: one real redis-server, one local Ray, one set of Serve applications per run.

Also marks the integration tests: every test that needs Ray, Serve, the local tier, the API or
the fleet (directly or through another fixture) gets `integration`, so `-m "not integration"`
runs the fast tests alone. Helpers tests import by name live in tests/support/, not here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import ray
import redis
from ray import serve

from actors.fleet import Fleet
from chorus.crypto import new_key
from chorus.settings import Settings, load_settings
from ops.deploy import connect_ray, deploy_local_tier, start_serve
from tests.support.api import API_LIMITS, create_key
from tests.support.devnet import devnet, devnet_rate_limited  # noqa: F401  (fixtures for every test)
from tests.support.processes import free_port, throwaway_redis
from tests.support.tiers import PREMIUM_PRICE, SERVICE_KEY, TEST_MODEL


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


TEST_CREDENTIALS_KEY = new_key()


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
        # Approved posts publish at once (not at the next cadence slot), polled often; credentials
        # sealed with a key of the session's own.
        publishing={
            "credentials_key": TEST_CREDENTIALS_KEY,
            "use_cadence_slots": False,
            "poll_interval_s": 0.2,
            "backoff_base_s": 0.2,
            "backoff_max_s": 2.0,
        },
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


# --- The fleet ---------------------------------------------------------------------------------


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


@pytest.fixture(scope="session")
def api_settings(fleet_settings: Settings) -> Settings:
    return fleet_settings.model_copy(update={"api": fleet_settings.api.model_copy(update=API_LIMITS)})


@pytest.fixture(scope="session")
def api(api_settings: Settings) -> str:
    """The Chorus API deployed once on the shared Serve, next to the local tier; its base URL.

    Ready, not only live: the API tests are spread over several modules (tests/serve/api/, the
    CLI's), so none of them can count on running after the one that waits for readiness.
    """
    from ops.deploy import api_url, deploy_api, wait_for_http

    deploy_api(api_settings)
    url = api_url(api_settings)
    wait_for_http(f"{url}/readyz", timeout_s=120)
    return url


@pytest.fixture(scope="session")
async def admin_key(api: str, api_settings: Settings) -> str:
    return await create_key(api_settings, "admin")


# --- Markers ------------------------------------------------------------------------------------

# A test that takes any of these (directly or through another fixture) needs Ray, Serve, the
# local tier's model, a deployed API or the fleet: an integration test.
INTEGRATION_FIXTURES = frozenset(
    {"ray_serve", "local_tier", "fleet", "fleet_settings", "api", "api_settings", "admin_key"}
    # A second Ray head, started by the campaign tests. (The API on uvicorn over Redis that the
    # edge tests use needs no Ray and takes seconds: those stay with the fast tests.)
    | {"ray_head"}
    # The local AT Protocol network: a node process with its own Postgres and Redis.
    | {"devnet", "devnet_rate_limited"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark integration tests, so `-m "not integration"` runs the fast ones and `-m integration`
    the rest. `slow` tests (whole `chorus up`/`down` runs) are integration tests too."""
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & INTEGRATION_FIXTURES or item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.integration)
