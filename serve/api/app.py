"""The Chorus HTTP API: a FastAPI app versioned under /v1, docs at /docs.

It only translates HTTP to the fleet (`actors/fleet.py`) and back. `create_app` builds the shared
state (`serve/api/deps.py`), the middleware and the error handlers, and includes one router per
resource (`serve/api/routers/`); the Serve deployment that runs it is `serve/api/deployment.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import ray
import redis.asyncio as aioredis
from fastapi import FastAPI

from actors.fleet import Fleet
from chorus.settings import Settings
from chorus.store.api_keys import KeyStore
from chorus.store.keys import keys_for
from serve.api.auth import Authenticate, Authorizer
from serve.api.deps import CHECK_TIMEOUT_S, ApiState
from serve.api.errors import GuardMiddleware, install_error_handlers
from serve.api.routers import accounts, fleet, health, inbox, jobs, keys, personas, posts

log = logging.getLogger(__name__)


def _state(settings: Settings) -> ApiState:
    # Up to max_ongoing_requests requests at once, each event stream in a blocking read: a pool
    # that size, which waits for a free connection rather than failing (redis-py caps a default
    # pool at 100 connections and raises beyond).
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis.url,
        max_connections=settings.api.max_ongoing_requests + 16,
        # The same timeout as every other client: event reads block store.events_block_ms, below it.
        socket_timeout=settings.redis.socket_timeout_s,
    )
    client = aioredis.Redis(connection_pool=pool)
    key_store = KeyStore(client, keys_for(settings))
    return ApiState(
        settings=settings,
        fleet=Fleet(settings, client),
        key_store=key_store,
        authorizer=Authorizer(key_store),
        http=httpx.AsyncClient(timeout=CHECK_TIMEOUT_S),
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ApiState = app.state.chorus

    async def warm_up() -> None:
        # Starting the directory (and what it starts) takes seconds on a cold cluster: do it now
        # rather than in the first request, so /readyz turns ready without a slow first answer.
        try:
            await state.fleet.directory()
        except Exception:
            log.exception("could not start the fleet's directory; /readyz will say so")

    # Only inside Ray (a Serve replica): elsewhere, creating an actor would start a Ray.
    warming = asyncio.create_task(warm_up()) if ray.is_initialized() else None
    yield
    if warming is not None:
        warming.cancel()
    await state.http.aclose()
    await state.fleet.close()


def create_app(settings: Settings) -> FastAPI:
    """The API over one fleet; every route but the health checks and the docs needs a key."""
    app = FastAPI(
        title="Chorus API",
        version="1",
        description="A fleet of AI social-media personas. Authenticate with `Authorization: Bearer <key>`.",
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    # On the app, not in a lifespan: tests and benchmarks serve the app with the lifespan off.
    app.state.chorus = state = _state(settings)
    # Added last, so outermost: the guard's size limit and incident ids cover authentication too.
    open_paths = {"/healthz", "/readyz", app.docs_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
    app.add_middleware(Authenticate, authorizer=state.authorizer, open_paths={p for p in open_paths if p})
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.api.max_body_bytes)
    install_error_handlers(app)
    for router in (health, personas, posts, inbox, accounts, jobs, fleet, keys):
        app.include_router(router.router)
    return app
