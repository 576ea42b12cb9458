"""API keys, stored in Redis (the key record and its roles are in ``chorus/models.py``).

A key reads ``chorus_<id>_<secret>``. Redis keeps only the SHA-256 of the whole key next to its
role, so a copy of the database does not hand out working keys; the id lets a lookup find the
record in one round trip. Keys are random 256-bit secrets, so a plain hash is enough: there is
no password to slow down brute force against.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any

from chorus.errors import InvalidKey, LastAdminKey
from chorus.models import ApiKey, Role

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from chorus.store.keys import Keys

KEY_PREFIX = "chorus"


# One message for an unknown and a revoked key: see InvalidKey.
INVALID_KEY_MESSAGE = "invalid API key (unknown or revoked)"


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
    # Derived, not read: records written before held the secret's first characters here.
    fields["hint"] = _hint(fields.get("id") or "")
    return ApiKey.model_validate(fields), digest


def _hint(key_id: str) -> str:
    return f"{KEY_PREFIX}_{key_id}_"


# Revoke unless it is the last live admin key, in one step so two admins revoking each other's
# keys at once cannot both succeed. -1: no such key; 0: the last admin key; 1: revoked (or was).
# The other records are found through the index set, inside the script (one Redis, no cluster).
_REVOKE = """
local role = redis.call('HGET', KEYS[1], 'role')
if not role then
  return -1
end
local revoked = redis.call('HGET', KEYS[1], 'revoked_at')
if revoked and revoked ~= '' then
  return 1
end
if role == 'admin' then
  local others = false
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local record = ARGV[2] .. id
    if record ~= KEYS[1] and redis.call('HGET', record, 'role') == 'admin' then
      local at = redis.call('HGET', record, 'revoked_at')
      if not at or at == '' then
        others = true
        break
      end
    end
  end
  if not others then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""


class KeyStore:
    """Creates, verifies, lists, revokes and purges API keys."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys
        self._revoke = client.register_script(_REVOKE)

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
            hint=_hint(key_id),
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
            raise InvalidKey(INVALID_KEY_MESSAGE)
        key, digest = _decode(raw)
        if not hmac.compare_digest(digest, _digest(token)) or key.revoked:
            raise InvalidKey(INVALID_KEY_MESSAGE)
        return key

    async def get(self, key_id: str) -> ApiKey | None:
        raw = await self._r.hgetall(self._record(key_id))
        return _decode(raw)[0] if raw else None

    async def list(self, include_revoked: bool = False) -> list[ApiKey]:
        """Keys, oldest first; revoked ones only when asked for."""
        ids = sorted(_text(m) for m in await self._r.smembers(self._k("apikeys")))
        async with self._r.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.hgetall(self._record(key_id))
            rows = await pipe.execute()
        found = [_decode(raw)[0] for raw in rows if raw]
        return sorted((k for k in found if include_revoked or not k.revoked), key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key at once (the record stays, for the listing, until purged); None when it
        does not exist. Raises LastAdminKey rather than revoke the last live admin key."""
        outcome = await self._revoke(
            keys=[self._record(key_id), self._k("apikeys")],
            args=[repr(time.time()), self._record("")],
        )
        if int(outcome) == 0:
            raise LastAdminKey(
                f"API key {key_id!r} is the last admin key; create another admin key before revoking it"
            )
        return await self.get(key_id) if int(outcome) == 1 else None

    async def purge_revoked(self) -> builtins.list[str]:  # `list` here is the method above
        """Delete the records of revoked keys (they are refused either way); returns their ids."""
        revoked = [key.id for key in await self.list(include_revoked=True) if key.revoked]
        if revoked:
            async with self._r.pipeline(transaction=True) as pipe:
                for key_id in revoked:
                    pipe.delete(self._record(key_id))
                pipe.srem(self._k("apikeys"), *revoked)
                await pipe.execute()
        return revoked
