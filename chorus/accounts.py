"""Platform accounts as the fleet uses them: added only after a real login, tested on demand,
marked `needs_reauth` when the platform stops taking their credentials, and re-authenticated
without losing the posts that waited meanwhile.

Credentials come in through `AccountInput` / `CredentialsInput` (SecretStr: never in a repr or a
log line), are sealed at rest (chorus/crypto.py) and are never part of an answer (`Account`).
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chorus.crypto import CredentialsKeyMissing, SecretBox
from chorus.errors import AccountExists, InvalidAccount, PlatformNotUsed, UnknownAccount, UnknownPersona
from chorus.models import Account, AccountStatus
from chorus.persona import Platform
from chorus.publishing.protocol import (
    AccountRef,
    Credentials,
    NeedsReauth,
    PlatformAdapter,
    PublishError,
    RateLimited,
)
from chorus.publishing.registry import DEFAULT_SERVICE_URLS, adapter_for, check_handle
from chorus.settings import Settings
from chorus.store.accounts import AccountRepo, RedisSessionStore, new_account_id
from chorus.store.keys import keys_for
from chorus.store.outbox import OutboxRepo
from chorus.store.personas import PersonaRepo

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class CredentialsInput(BaseModel):
    """What logs an account in. Bluesky: an app password; Mastodon: an access token; X: an OAuth 2
    user access token with its refresh token and the app's client id."""

    model_config = ConfigDict(extra="forbid")

    secret: SecretStr = Field(min_length=1, description="app password or access token; never shown again")
    refresh_token: SecretStr | None = None
    client_id: str | None = Field(None, max_length=200)
    expires_at: float | None = Field(None, description="when the access token expires (Unix time)")

    def credentials(self) -> Credentials:
        return Credentials(
            secret=self.secret,
            refresh_token=self.refresh_token,
            client_id=self.client_id,
            expires_at=self.expires_at,
        )


class AccountInput(CredentialsInput):
    platform: Platform
    handle: str = Field(min_length=1, max_length=253)
    service_url: str | None = Field(
        None, max_length=2000, description="the account's server (its PDS, its Mastodon instance)"
    )


_LOOPBACK_NAMES = {"localhost"}


def check_service_url(platform: Platform, url: str | None) -> str:
    """The service URL to use: given, or the platform's default. HTTPS, except on loopback (a
    local test network); no credentials, query or fragment in it."""
    if not url:
        default = DEFAULT_SERVICE_URLS.get(platform)
        if default is None:
            raise InvalidAccount(
                f"a {platform.value} account needs service_url, the address of its server "
                "(for example https://mastodon.social)",
                field="service_url",
            )
        return default
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    try:
        loopback = host in _LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidAccount(f"service_url {url!r} is not an http(s) URL", field="service_url")
    if parts.scheme == "http" and not loopback:
        raise InvalidAccount(
            f"service_url {url!r} must use https (plain http is accepted only on loopback)",
            field="service_url",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidAccount(
            f"service_url {url!r} must be just the server's address, without credentials, query or fragment",
            field="service_url",
        )
    return url.strip().rstrip("/")


class AccountService:
    def __init__(self, settings: Settings, client: aioredis.Redis) -> None:
        keys = keys_for(settings)
        key = settings.publishing.credentials_key
        self._box = SecretBox(key) if key.get_secret_value().strip() else None
        self.repo = AccountRepo(client, keys, self._box)
        self.outbox = OutboxRepo(client, keys)
        self.personas = PersonaRepo(client, keys)
        self._client, self._keys = client, keys
        self._timeout_s = settings.publishing.http_timeout_s
        self._adapters: dict[Platform, PlatformAdapter] = {}

    def adapter(self, platform: Platform) -> PlatformAdapter:
        if platform not in self._adapters:
            self._adapters[platform] = adapter_for(
                platform,
                sessions=RedisSessionStore(self._client, self._keys, self._sealer()),
                on_credentials_changed=self.repo.set_credentials,
                timeout_s=self._timeout_s,
            )
        return self._adapters[platform]

    def _sealer(self) -> SecretBox:
        if self._box is None:
            raise CredentialsKeyMissing()
        return self._box

    async def ref(self, account_id: str) -> AccountRef:
        account = await self.repo.get(account_id)
        credentials = await self.repo.credentials(account_id)
        if account is None or credentials is None:
            raise InvalidAccount(f"account {account_id!r} does not exist", field="account_id")
        return AccountRef(
            id=account.id,
            persona_id=account.persona_id,
            platform=account.platform,
            handle=account.handle,
            service_url=account.service_url,
            credentials=credentials,
        )

    async def _login(self, ref: AccountRef) -> str:
        """A real login; the platform's identity for the account. A refused login or an
        unreachable server is the caller's to fix: InvalidAccount naming the field."""
        try:
            return await self.adapter(ref.platform).verify(ref)
        except NeedsReauth as exc:
            raise InvalidAccount(
                f"{ref.platform.value} refused the login for {ref.handle!r}: {exc.message}; "
                "check the handle and the credentials",
                field="secret",
            ) from None
        except RateLimited as exc:
            wait = max(0, int(exc.retry_at - time.time()))
            raise InvalidAccount(
                f"{ref.platform.value} is rate-limiting logins for {ref.handle!r}; try again in {wait} s",
                field="secret",
            ) from None
        except PublishError as exc:
            raise InvalidAccount(
                f"could not log in to {ref.platform.value} at {ref.service_url}: {exc.message}",
                field="service_url",
            ) from None

    async def add(self, persona_id: str, data: AccountInput) -> Account:
        spec = await self.personas.get(persona_id)
        if spec is None:
            raise UnknownPersona(persona_id)
        if data.platform not in DEFAULT_SERVICE_URLS:
            raise InvalidAccount(
                f"Chorus cannot publish to {data.platform.value}; it publishes to "
                + ", ".join(p.value for p in DEFAULT_SERVICE_URLS),
                field="platform",
            )
        platforms = [p.name.value for p in spec.platforms]
        if data.platform.value not in platforms:
            raise PlatformNotUsed(persona_id, data.platform.value, platforms)
        check_handle(data.platform, data.handle)
        handle = data.handle.strip()
        service_url = check_service_url(data.platform, data.service_url)
        now = time.time()
        account = Account(
            id=new_account_id(),
            persona_id=persona_id,
            platform=data.platform,
            handle=handle,
            service_url=service_url,
            created_at=now,
            updated_at=now,
        )
        ref = AccountRef(
            id=account.id,
            persona_id=persona_id,
            platform=data.platform,
            handle=handle,
            service_url=service_url,
            credentials=data.credentials(),
        )
        if await self.repo.get_for(persona_id, data.platform) is not None:
            raise AccountExists(persona_id, data.platform.value)
        account.identity = await self._login(ref)
        return await self.repo.add(account, data.credentials())

    async def get(self, persona_id: str, platform: Platform) -> Account:
        account = await self.repo.get_for(persona_id, platform)
        if account is None:
            raise UnknownAccount(persona_id, platform.value)
        return account

    async def test(self, persona_id: str, platform: Platform) -> Account:
        """Log in for real now: an account that works is active again, one that does not is
        marked `needs_reauth` with the platform's words."""
        account_id = (await self.get(persona_id, platform)).id
        ref = await self.ref(account_id)
        try:
            identity = await self.adapter(ref.platform).verify(ref)
        except NeedsReauth as exc:
            marked = await self.repo.mark_needs_reauth(account_id, exc.message)
            assert marked is not None
            return marked
        account = await self.repo.mark_active(account_id, identity)
        assert account is not None
        if account.status == AccountStatus.active:
            await self.outbox.release_account(account_id)
        return account

    async def reauth(self, persona_id: str, platform: Platform, data: CredentialsInput) -> Account:
        """New credentials for an account: checked with a real login, stored, and the account's
        waiting posts released to the publisher."""
        account_id = (await self.get(persona_id, platform)).id
        ref = await self.ref(account_id)
        ref = ref.model_copy(update={"credentials": data.credentials()})
        await RedisSessionStore(self._client, self._keys, self._sealer()).clear(account_id)
        identity = await self._login(ref)
        await self.repo.set_credentials(account_id, data.credentials())
        account = await self.repo.mark_active(account_id, identity)
        assert account is not None
        await self.outbox.release_account(account_id)
        return account

    async def remove(self, persona_id: str, platform: Platform) -> Account:
        """Remove an account and its credentials. Its posts still in the outbox fail with a
        message saying so when the publisher reaches them."""
        account_id = (await self.get(persona_id, platform)).id
        account = await self.repo.remove(account_id)
        if account is None:
            raise UnknownAccount(persona_id, platform.value)
        await self.outbox.release_account(account_id)
        return account

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            await adapter.aclose()
        self._adapters.clear()
