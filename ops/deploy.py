"""Starting and reaching the local Ray runtime and the Serve applications Chorus runs on it.

Ops code, not core: deploying means importing the Serve applications (`serve/`), and only the
CLI and ops sit above that layer (see CONTRIBUTING.md).
"""

from __future__ import annotations

import logging
import time

import httpx
import ray
from ray import serve

from chorus.settings import Settings

log = logging.getLogger(__name__)

LOCAL_TIER_APP = "chorus-llm"
LOCAL_TIER_ROUTE = "/llm"
API_APP = "chorus-api"
API_ROUTE = "/"


def connect_ray(settings: Settings, *, num_cpus: int | None = None) -> None:
    """Join the configured Ray cluster, or start a local one when none is configured.

    With no address Ray joins a cluster started by `ray start` on this machine if there is one
    (what `chorus up` leaves running); "local" always starts a private one (what tests need).
    """
    if ray.is_initialized():
        return
    starts_own = settings.ray_address in (None, "local")
    ray.init(
        address=settings.ray_address,
        namespace=settings.ray_namespace,
        num_cpus=num_cpus if starts_own else None,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


def start_serve(settings: Settings) -> None:
    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})


def deploy_local_tier(settings: Settings, *, timeout_s: float = 300.0) -> None:
    """Deploy the local tier chosen by settings and wait until it answers on its HTTP route."""
    from serve.llm.builder import local_tier_app

    app = local_tier_app(settings)
    serve.run(app, name=LOCAL_TIER_APP, route_prefix=LOCAL_TIER_ROUTE, blocking=False)
    # With the service key: ready means the tier answers the fleet's own clients.
    wait_for_http(
        settings.local.base_url.rstrip("/") + "/models",
        timeout_s=timeout_s,
        headers=settings.local.auth_headers(),
    )


def api_url(settings: Settings) -> str:
    """Where local clients reach the HTTP API: Serve's proxy."""
    return settings.serve.url


def deploy_api(settings: Settings, *, timeout_s: float = 120.0) -> None:
    """Deploy the HTTP API next to the local tier (one Serve instance) and wait until it answers."""
    from serve.api.deployment import api_app

    serve.run(api_app(settings), name=API_APP, route_prefix=API_ROUTE, blocking=False)
    wait_for_http(api_url(settings) + "/healthz", timeout_s=timeout_s)


def wait_for_http(url: str, *, timeout_s: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last: str = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5, headers=headers)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not become ready within {timeout_s:.0f}s (last: {last})")
