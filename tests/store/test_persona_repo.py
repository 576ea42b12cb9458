"""PersonaRepo on a real redis-server: a deleted persona is restorable only within its retention."""

from __future__ import annotations

import redis.asyncio as aioredis

from chorus.store.keys import Keys
from chorus.store.personas import PersonaRepo
from tests.support.personas import make_persona, unique_id


async def test_a_persona_is_restorable_only_within_the_retention(redis_url: str) -> None:
    client = async_redis_at(redis_url)
    repo = PersonaRepo(client, Keys(unique_id("retention")))
    spec = make_persona(unique_id("kept"))
    try:
        assert await repo.put(spec)
        assert await repo.delete(spec.id, retain_s=3600)
        assert await repo.get(spec.id) is None and spec.id not in await repo.ids()
        ttl = await client.ttl(repo._k("deleted", "persona", spec.id))
        assert 3500 < ttl <= 3600
        assert await repo.restore(spec.id) == ("restored", spec)
        assert await repo.delete(spec.id, retain_s=0)
        assert await repo.restore(spec.id) == ("gone", None)
        assert not await repo.delete(spec.id)
    finally:
        await client.aclose()


def async_redis_at(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url)
