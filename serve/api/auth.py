"""Bearer keys on the HTTP API: who is calling (401) and whether their role may do it (403).

Who is calling is settled by `Authenticate`, a middleware, before FastAPI reads a body: an
anonymous client gets 401 whatever it sends, never a parse error that tells it about the route.
The role check stays a dependency of each router or route (`serve/api/deps.py`), where the OpenAPI
schema shows it.
"""

import re
from collections.abc import Collection

from fastapi.security import HTTPBearer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from chorus.errors import InvalidKey
from chorus.models import ApiKey
from chorus.store.api_keys import KEY_PREFIX, KeyStore
from serve.api.errors import ApiError, GuardMiddleware, redis_unavailable

# What a key looks like: only its id reaches a Redis key name, the rest is hashed.
KEY_ID_PATTERN = r"^[0-9a-f]{12}$"
TOKEN_PATTERN = rf"^{KEY_PREFIX}_[0-9a-f]{{12}}_[A-Za-z0-9_-]{{1,128}}$"

# auto_error=False: a missing header becomes our own 401 body rather than FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="An API key from `chorus keys create`.")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def missing_key() -> ApiError:
    return ApiError(
        401, "missing_key", "send an API key as 'Authorization: Bearer <key>'", headers=_CHALLENGE
    )


class Authorizer:
    """Turns a bearer token into the key's record, for the middleware and the role checks."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store

    async def authenticate(self, token: str) -> ApiKey:
        """The key's record; ApiError 401 when the token is not a live key."""
        if re.fullmatch(TOKEN_PATTERN, token) is None:
            raise ApiError(
                401,
                "invalid_key",
                f"malformed API key (keys read {KEY_PREFIX}_<id>_<secret>)",
                headers=_CHALLENGE,
            )
        try:
            return await self.store.verify(token)
        except InvalidKey as exc:
            raise ApiError(401, exc.code.value, str(exc), headers=_CHALLENGE) from None


class Authenticate:
    """Settles who is calling before anything reads the request, except on `open_paths`.

    Pure ASGI, like GuardMiddleware, so event streams are not buffered; it sits outside the
    app's exception handlers, so it answers its own errors.
    """

    def __init__(self, app: ASGIApp, authorizer: Authorizer, open_paths: Collection[str]) -> None:
        self.app = app
        self.authorizer = authorizer
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        scheme, _, token = (header or b"").decode("latin-1").partition(" ")
        try:
            if not token or scheme.lower() != "bearer":
                raise missing_key()
            key = await self.authorizer.authenticate(token.strip())
        except ApiError as exc:
            await GuardMiddleware.send_error(send, exc)
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            await GuardMiddleware.send_error(send, redis_unavailable(exc))
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)
