"""API keys and roles, stored in Redis.

A key reads ``chorus_<id>_<secret>``. Redis keeps only the SHA-256 of the whole key next to its
role, so a copy of the database does not hand out working keys; the id lets a lookup find the
record in one round trip. Keys are random 256-bit secrets, so a plain hash is enough: there is
no password to slow down brute force against.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel

from chorus.store import Keys

Role = Literal["admin", "editor", "viewer"]
# Least to most powerful: a role may do everything the roles before it may.
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
KEY_PREFIX = "chorus"


def role_allows(have: Role, need: Role) -> bool:
    return ROLES.index(have) >= ROLES.index(need)


class InvalidKey(Exception):
    """The key is malformed, unknown or revoked; the message says which, never the secret."""


class ApiKey(BaseModel):
    id: str
    role: Role
    name: str = ""
    created_at: float
    revoked_at: float | None = None
    # The key's first characters, so people can tell their keys apart in a listing.
    hint: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_id(token: str) -> str | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not key_id or not secret:
        return None
    return key_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(raw: dict[Any, Any]) -> tuple[ApiKey, str]:
    fields: dict[str, str | None] = {_text(k): _text(v) for k, v in raw.items()}
    digest = fields.pop("sha256") or ""
    fields["revoked_at"] = fields.get("revoked_at") or None  # stored as "" until revoked
    return ApiKey.model_validate(fields), digest


class KeyStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys

    def _record(self, key_id: str) -> str:
        return self._k("apikey", key_id)

    async def create(self, role: Role, name: str = "") -> tuple[ApiKey, str]:
        """A new key; returns its record and the key itself, which is stored nowhere."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        token = f"{KEY_PREFIX}_{key_id}_{secret}"
        key = ApiKey(
            id=key_id,
            role=role,
            name=name,
            created_at=time.time(),
            hint=f"{KEY_PREFIX}_{key_id}_{secret[:4]}",
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._record(key_id),
                mapping={
                    "id": key_id,
                    "role": role,
                    "name": name,
                    "created_at": repr(key.created_at),
                    "hint": key.hint,
                    "sha256": _digest(token),
                    "revoked_at": "",
                },
            )
            pipe.sadd(self._k("apikeys"), key_id)
            await pipe.execute()
        return key, token

    async def verify(self, token: str) -> ApiKey:
        key_id = _key_id(token)
        if key_id is None:
            raise InvalidKey("malformed API key")
        raw = await self._r.hgetall(self._record(key_id))
        if not raw:
            raise InvalidKey("unknown API key")
        key, digest = _decode(raw)
        if not hmac.compare_digest(digest, _digest(token)):
            raise InvalidKey("unknown API key")
        if key.revoked:
            raise InvalidKey("API key has been revoked")
        return key

    async def get(self, key_id: str) -> ApiKey | None:
        raw = await self._r.hgetall(self._record(key_id))
        return _decode(raw)[0] if raw else None

    async def list(self) -> list[ApiKey]:
        ids = sorted(_text(m) for m in await self._r.smembers(self._k("apikeys")))
        async with self._r.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.hgetall(self._record(key_id))
            rows = await pipe.execute()
        found = [_decode(raw)[0] for raw in rows if raw]
        return sorted(found, key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key at once (the record stays, for the listing); None when it does not exist."""
        key = await self.get(key_id)
        if key is None:
            return None
        if not key.revoked:
            key = key.model_copy(update={"revoked_at": time.time()})
            await self._r.hset(self._record(key_id), "revoked_at", repr(key.revoked_at))
        return key
