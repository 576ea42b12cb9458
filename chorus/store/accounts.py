"""Platform accounts and their login sessions.

An account's public record (handle, service URL, status) and its credentials are kept apart: the
record is plain JSON the API may show, the credentials (and the platform sessions made from them)
are sealed with the fleet's credentials key (chorus/crypto.py) and only ever opened in the process
that logs in. A persona has at most one account per platform.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from chorus.crypto import SecretBox
from chorus.errors import AccountExists
from chorus.models import Account, AccountStatus
from chorus.persona import Platform
from chorus.publishing.protocol import Credentials
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis


def new_account_id() -> str:
    return f"acct_{uuid.uuid4().hex[:20]}"


def _reveal(credentials: Credentials) -> str:
    return json.dumps(
        {
            "secret": credentials.secret.get_secret_value(),
            "refresh_token": (
                credentials.refresh_token.get_secret_value() if credentials.refresh_token else None
            ),
            "client_id": credentials.client_id,
            "expires_at": credentials.expires_at,
        }
    )


class AccountRepo:
    def __init__(self, client: aioredis.Redis, keys: Keys, box: SecretBox | None) -> None:
        self._r, self._k, self._box = client, keys, box

    def _sealer(self) -> SecretBox:
        if self._box is None:
            # Raised only where a secret is needed: listing accounts works without the key.
            from chorus.crypto import CredentialsKeyMissing

            raise CredentialsKeyMissing()
        return self._box

    async def add(self, account: Account, credentials: Credentials) -> Account:
        """Store a new account; AccountExists when the persona has one on that platform."""
        sealed = self._sealer().seal(_reveal(credentials))
        index = self._k("accounts", "persona", account.persona_id)
        if not await self._r.hsetnx(index, account.platform.value, account.id):
            raise AccountExists(account.persona_id, account.platform.value)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("account", account.id), account.model_dump_json())
            pipe.set(self._k("account", account.id, "credentials"), sealed)
            pipe.zadd(self._k("accounts"), {account.id: account.created_at})
            await pipe.execute()
        return account

    async def get(self, account_id: str) -> Account | None:
        raw = await self._r.get(self._k("account", account_id))
        return Account.model_validate_json(raw) if raw else None

    async def get_for(self, persona_id: str, platform: Platform) -> Account | None:
        account_id: bytes | None = await self._r.hget(  # type: ignore[assignment]
            self._k("accounts", "persona", persona_id), platform.value
        )
        return await self.get(account_id.decode()) if account_id else None

    async def for_persona(self, persona_id: str) -> dict[Platform, Account]:
        rows: dict[Any, Any] = await self._r.hgetall(self._k("accounts", "persona", persona_id))
        found: dict[Platform, Account] = {}
        for platform, account_id in rows.items():
            account = await self.get(account_id.decode())
            if account is not None:
                found[Platform(platform.decode())] = account
        return found

    async def list(self, persona_id: str | None = None) -> list[Account]:
        if persona_id is not None:
            return sorted((await self.for_persona(persona_id)).values(), key=lambda a: a.created_at)
        ids: list[Any] = await self._r.zrange(self._k("accounts"), 0, -1)
        raws = await self._r.mget([self._k("account", i.decode()) for i in ids]) if ids else []
        return [Account.model_validate_json(r) for r in raws if r is not None]

    async def credentials(self, account_id: str) -> Credentials | None:
        sealed = await self._r.get(self._k("account", account_id, "credentials"))
        if sealed is None:
            return None
        data = json.loads(self._sealer().open(sealed))
        return Credentials(
            secret=SecretStr(data["secret"]),
            refresh_token=SecretStr(data["refresh_token"]) if data.get("refresh_token") else None,
            client_id=data.get("client_id"),
            expires_at=data.get("expires_at"),
        )

    async def set_credentials(self, account_id: str, credentials: Credentials) -> None:
        """Replace an account's credentials (renewed tokens, or new ones after a re-auth)."""
        sealed = self._sealer().seal(_reveal(credentials))
        await self._r.set(self._k("account", account_id, "credentials"), sealed)

    async def _update(self, account_id: str, **changes: Any) -> Account | None:
        account = await self.get(account_id)
        if account is None:
            return None
        account = account.model_copy(update={**changes, "updated_at": time.time()})
        await self._r.set(self._k("account", account_id), account.model_dump_json())
        return account

    async def mark_needs_reauth(self, account_id: str, message: str) -> Account | None:
        return await self._update(account_id, status=AccountStatus.needs_reauth, status_message=message)

    async def mark_active(self, account_id: str, identity: str | None = None) -> Account | None:
        changes: dict[str, Any] = {"status": AccountStatus.active, "status_message": None}
        if identity is not None:
            changes["identity"] = identity
        return await self._update(account_id, **changes)

    async def remove(self, account_id: str) -> Account | None:
        account = await self.get(account_id)
        if account is None:
            return None
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hdel(self._k("accounts", "persona", account.persona_id), account.platform.value)
            pipe.delete(
                self._k("account", account_id),
                self._k("account", account_id, "credentials"),
                self._k("session", account_id),
            )
            pipe.zrem(self._k("accounts"), account_id)
            await pipe.execute()
        return account


class RedisSessionStore:
    """Platform login sessions (Bluesky's access and refresh JWTs), sealed like credentials, so
    every publisher process reuses one login per account."""

    def __init__(self, client: aioredis.Redis, keys: Keys, box: SecretBox) -> None:
        self._r, self._k, self._box = client, keys, box

    async def load(self, account_id: str) -> dict[str, str] | None:
        sealed = await self._r.get(self._k("session", account_id))
        if sealed is None:
            return None
        try:
            loaded: dict[str, str] = json.loads(self._box.open(sealed))
        except Exception:
            return None  # a key change: log in again rather than fail the post
        return loaded

    async def save(self, account_id: str, session: dict[str, str]) -> None:
        await self._r.set(self._k("session", account_id), self._box.seal(json.dumps(session)))

    async def clear(self, account_id: str) -> None:
        await self._r.delete(self._k("session", account_id))
