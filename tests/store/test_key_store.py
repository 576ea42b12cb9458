"""KeyStore on a real redis-server: keys verify until revoked, Redis holds no secret, and the
last live admin key cannot be revoked. No Ray: fast tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chorus.errors import InvalidKey, LastAdminKey
from chorus.store.api_keys import KeyStore
from chorus.store.keys import Keys


@pytest.fixture()
async def store(redis_url: str) -> AsyncIterator[tuple[KeyStore, aioredis.Redis]]:
    client = aioredis.Redis.from_url(redis_url)
    yield KeyStore(client, Keys(f"keys-{uuid.uuid4().hex[:8]}")), client
    await client.aclose()


async def test_a_created_key_verifies_and_its_secret_is_stored_nowhere(
    store: tuple[KeyStore, aioredis.Redis],
) -> None:
    keys, client = store
    record, token = await keys.create("editor", "ci")
    assert token.startswith(f"chorus_{record.id}_")
    assert (await keys.verify(token)).role == "editor"
    secret = token.rsplit("_", 1)[-1]
    for key in await client.keys("*"):
        assert secret.encode() not in await client.dump(key), key


async def test_unknown_revoked_and_malformed_keys_are_refused(store: tuple[KeyStore, aioredis.Redis]) -> None:
    keys, _ = store
    await keys.create("admin")
    record, token = await keys.create("viewer")
    with pytest.raises(InvalidKey):
        await keys.verify("not-a-key")
    with pytest.raises(InvalidKey) as unknown:
        await keys.verify(token[:-4] + "xxxx")
    revoked = await keys.revoke(record.id)
    assert revoked is not None and revoked.revoked
    with pytest.raises(InvalidKey) as after_revoke:
        await keys.verify(token)
    assert str(unknown.value) == str(after_revoke.value)  # one answer for unknown and revoked
    assert await keys.revoke("000000000000") is None


async def test_the_last_live_admin_key_stays_and_purge_drops_revoked_records(
    store: tuple[KeyStore, aioredis.Redis],
) -> None:
    keys, _ = store
    first, _ = await keys.create("admin")
    second, _ = await keys.create("admin")
    await keys.revoke(first.id)
    with pytest.raises(LastAdminKey):
        await keys.revoke(second.id)
    assert [k.id for k in await keys.list()] == [second.id]
    assert [k.id for k in await keys.list(include_revoked=True)] == [first.id, second.id]
    assert await keys.purge_revoked() == [first.id]
    assert await keys.get(first.id) is None
