"""Who may use the local tier's OpenAI-compatible routes.

Completions take the fleet's service key only (``local.api_key``): every model call then goes
through the model gateway, with its budgets, cache and metrics. The model list is readable by any
valid Chorus API key as well, so people can see what the tier serves; health and docs are open.
The guard keeps only the service key's SHA-256 digest, and never logs a key.

A pure ASGI middleware rather than per-route dependencies: a route added later is refused by
default instead of being open by default.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Literal

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from chorus.errors import InvalidKey, SettingsError
from chorus.settings import LocalTierSettings
from chorus.store.api_keys import KeyStore

Access = Literal["open", "any_key", "service"]

_OPEN_SUFFIXES = ("/health", "/docs", "/openapi.json")
_CHALLENGE = (b"www-authenticate", b"Bearer")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def access_for(path: str) -> Access:
    """What a route needs; paths are matched by suffix, as Serve mounts the tier under a prefix."""
    path = path.rstrip("/")
    if path.endswith(_OPEN_SUFFIXES):
        return "open"
    if path.endswith("/v1/models") or "/v1/models/" in path:
        return "any_key"
    return "service"


def require_service_key(tier: LocalTierSettings) -> None:
    """Refuse to deploy a tier that no client could call."""
    if tier.api_key is None or not tier.api_key.get_secret_value().strip():
        raise SettingsError(
            "setting 'local.api_key' (env CHORUS_LOCAL__API_KEY) is not set: the local tier takes "
            "only the fleet's service key; `chorus up` generates one, a cluster sets it from its Secret"
        )


class TierAuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class TierGuard:
    def __init__(self, service_key: SecretStr | None, keys: KeyStore | None) -> None:
        self._service = _digest(service_key.get_secret_value()) if service_key is not None else None
        self._keys = keys

    async def check(self, access: Access, authorization: str | None) -> None:
        """Raises TierAuthError unless `authorization` may use a route that needs `access`."""
        if access == "open":
            return
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TierAuthError(401, "missing_key", "send a key as 'Authorization: Bearer <key>'")
        if self._service is not None and hmac.compare_digest(self._service, _digest(token)):
            return
        if not await self._valid_api_key(token):
            raise TierAuthError(401, "invalid_key", "invalid key")
        if access == "service":
            raise TierAuthError(
                403,
                "forbidden",
                "completions here take the fleet's service key only; generate posts through "
                "the Chorus API (POST /v1/personas/{id}/posts:generate)",
            )

    async def _valid_api_key(self, token: str) -> bool:
        if self._keys is None:
            return False
        try:
            await self._keys.verify(token)
        except InvalidKey:
            return False
        return True


# The guard of this process's tier, set by the Serve replica's constructor. Kept here, in an
# importable module, and reached only through these functions: Serve ships a deployment's class
# by value, so a global set from its methods would land in a copy of their module's namespace.
_installed: TierGuard | None = None


def install_guard(guard: TierGuard) -> None:
    global _installed
    _installed = guard


def installed_guard() -> TierGuard | None:
    return _installed


class TierAuthMiddleware:
    """Checks every HTTP request against the guard `guard()` returns (None: every key is refused).

    A callable rather than the guard itself: the guard is built in the Serve replica's constructor,
    after Serve has taken its copy of the module-level app and this middleware with it.
    """

    def __init__(self, app: ASGIApp, guard: Callable[[], TierGuard | None] = installed_guard) -> None:
        self.app = app
        self._guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard = self._guard() or TierGuard(None, None)
        authorization = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"), None
        )
        try:
            await guard.check(access_for(scope["path"]), authorization)
        except TierAuthError as exc:
            kind = "authentication_error" if exc.status == 401 else "permission_error"
            body = json.dumps(
                {"error": {"message": exc.message, "type": kind, "param": None, "code": exc.code}}
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if exc.status == 401:
                headers.append(_CHALLENGE)
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
