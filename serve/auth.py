"""Bearer keys on the HTTP API: who is calling (401) and whether their role may do it (403)."""

from collections.abc import Awaitable, Callable

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chorus.auth import ApiKey, InvalidKey, KeyStore, Role, role_allows
from serve.errors import ApiError

# auto_error=False: a missing header becomes our own 401 body rather than FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="An API key from `chorus keys create`.")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Authorizer:
    def __init__(self, store: KeyStore) -> None:
        self.store = store

    def require(self, role: Role) -> Callable[..., Awaitable[ApiKey]]:
        """A dependency that admits keys whose role is `role` or more powerful."""

        async def authorize(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> ApiKey:
            if credentials is None:
                raise ApiError(
                    401, "missing_key", "send an API key as 'Authorization: Bearer <key>'", headers=_CHALLENGE
                )
            try:
                key = await self.store.verify(credentials.credentials)
            except InvalidKey as exc:
                raise ApiError(401, "invalid_key", str(exc), headers=_CHALLENGE) from None
            if not role_allows(key.role, role):
                raise ApiError(403, "forbidden", f"this needs the {role} role; the key has {key.role}")
            return key

        return authorize
