"""Liveness and readiness, open to anyone (no key): what probes and load balancers ask."""

import asyncio

from fastapi import APIRouter

from serve.api.deps import CHECK_TIMEOUT_S, State, errors, within
from serve.api.errors import ApiError
from serve.api.protocol import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health()


@router.get("/readyz", responses=errors(503))
async def readyz(state: State) -> Readiness:
    """Redis reachable, the local tier answering, the fleet's directory alive."""
    settings, fleet = state.settings, state.fleet

    async def redis_check() -> None:
        await within(fleet.ping_store(), CHECK_TIMEOUT_S)

    async def local_tier_check() -> None:
        # With the gateway's service key: a tier that would refuse the fleet is not ready.
        response = await state.http.get(
            settings.local.base_url.rstrip("/") + "/models", headers=settings.local.auth_headers()
        )
        response.raise_for_status()

    async def directory_check() -> None:
        directory = await within(fleet.directory(), CHECK_TIMEOUT_S)
        await within(directory.ping.remote(), CHECK_TIMEOUT_S)

    names = ("redis", "local_tier", "directory")
    results = await asyncio.gather(
        redis_check(), local_tier_check(), directory_check(), return_exceptions=True
    )
    checks = {
        name: "ok" if result is None else f"failed: {type(result).__name__}: {result}".rstrip(": ")
        for name, result in zip(names, results, strict=True)
    }
    # Not probed: the router falls back to the local tier when the premium one fails.
    checks["premium_tier"] = "configured" if settings.premium.configured else "not configured"
    if any(result is not None for result in results):
        raise ApiError(503, "not_ready", "a dependency is down", details={"checks": checks})
    return Readiness(status="ready", checks=checks)
