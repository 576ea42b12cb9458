"""Redis connections, made one way for every component.

The socket timeout is `redis.socket_timeout_s` (redis-py 8 defaults to 5 s): blocking reads of
job event streams wait up to `store.events_block_ms`, which Settings keeps below it, so a read
returns empty before the client would call it a network timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chorus.settings import Settings

if TYPE_CHECKING:  # imported where a client is made: modules that only need Keys stay light
    import redis
    import redis.asyncio as aioredis


def async_redis(settings: Settings) -> aioredis.Redis:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(
        settings.redis.url, decode_responses=False, socket_timeout=settings.redis.socket_timeout_s
    )


def sync_redis(settings: Settings) -> redis.Redis:
    import redis

    return redis.Redis.from_url(
        settings.redis.url, decode_responses=False, socket_timeout=settings.redis.socket_timeout_s
    )
