"""What the API's routes share, kept on `app.state` and handed to routes as FastAPI dependencies.

`create_app` puts one `ApiState` on the app (the fleet, the key store, the readiness client, the
sync-wait limiter); routes name what they need (`FleetDep`, `ViewerKey`...) instead of closing
over it, so each router is a plain module that any app built by `create_app` can include.

No `from __future__ import annotations` here: FastAPI reads these annotations at run time.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from actors.fleet import Fleet
from chorus.models import ApiKey, Role, role_allows
from chorus.settings import ApiSettings, Settings
from chorus.store.api_keys import KeyStore
from serve.api.auth import Authorizer, bearer, missing_key
from serve.api.errors import ApiError
from serve.api.protocol import ErrorResponse

# How long /readyz and /v1/status wait for one dependency.
CHECK_TIMEOUT_S = 3.0


async def within(awaitable: Awaitable[Any], timeout_s: float) -> Any:
    """The awaitable's result, or TimeoutError after `timeout_s` (Ray's ObjectRefs included)."""

    async def wait() -> Any:
        return await awaitable

    return await asyncio.wait_for(wait(), timeout_s)


def overloaded(settings: ApiSettings, why: str) -> ApiError:
    return ApiError(
        503,
        "overloaded",
        f"{why}; retry in {settings.retry_after_s}s",
        headers={"Retry-After": str(settings.retry_after_s)},
    )


@dataclass
class SyncWaitLimiter:
    """Caps the requests waiting synchronously for their posts (`api.max_sync_waits`).

    One per app: an event-loop counter, no lock needed, since a replica serves on one loop.
    """

    limits: ApiSettings
    waiting: int = 0

    @contextmanager
    def hold(self, waits: bool) -> Iterator[None]:
        """Counts the caller as waiting while inside (when `waits`); 503 when the cap is reached."""
        if waits and self.waiting >= self.limits.max_sync_waits:
            raise overloaded(self.limits, f"{self.waiting} synchronous requests are already waiting")
        self.waiting += waits
        try:
            yield
        finally:
            self.waiting -= waits


@dataclass
class ApiState:
    """Everything the routes of one app share; `create_app` builds it, the lifespan closes it."""

    settings: Settings
    fleet: Fleet
    key_store: KeyStore
    authorizer: Authorizer
    http: httpx.AsyncClient
    sync_waits: SyncWaitLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.sync_waits = SyncWaitLimiter(self.settings.api)


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.chorus
    return state


State = Annotated[ApiState, Depends(api_state)]


def _fleet(state: State) -> Fleet:
    return state.fleet


def _settings(state: State) -> Settings:
    return state.settings


def _key_store(state: State) -> KeyStore:
    return state.key_store


FleetDep = Annotated[Fleet, Depends(_fleet)]
SettingsDep = Annotated[Settings, Depends(_settings)]
KeyStoreDep = Annotated[KeyStore, Depends(_key_store)]


def require(role: Role) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that admits keys whose role is `role` or more powerful (403 otherwise)."""

    async def authorize(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> ApiKey:
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if key is None:  # an app mounted without Authenticate
            if credentials is None:
                raise missing_key()
            key = await api_state(request).authorizer.authenticate(credentials.credentials)
        if not role_allows(key.role, role):
            raise ApiError(403, "forbidden", f"this needs the {role} role; the key has {key.role}")
        return key

    return authorize


# One dependency per role, so a router's and a route's check of the same role run once.
viewer = Depends(require("viewer"))
editor = Depends(require("editor"))
admin = Depends(require("admin"))
EditorKey = Annotated[ApiKey, editor]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entry for error statuses: each one is an ErrorResponse body."""
    return {status: {"model": ErrorResponse} for status in statuses}
