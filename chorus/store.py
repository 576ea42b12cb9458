"""Redis connections and the one key layout every component uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chorus.settings import Settings

if TYPE_CHECKING:  # imported where a client is made: modules that only need Keys stay light
    import redis
    import redis.asyncio as aioredis


class Keys:
    """Builds Redis keys under the configured prefix, so several deployments can share a server."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


def keys_for(settings: Settings) -> Keys:
    return Keys(settings.redis.key_prefix)


# redis-py 8 defaults to a 5 s socket timeout, which a blocking XREAD of the same length races;
# job event streams block for up to EVENTS_BLOCK_MS, so reads may take that long by design.
EVENTS_BLOCK_MS = 10_000
SOCKET_TIMEOUT_S = 30.0


def async_redis(settings: Settings) -> aioredis.Redis:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(
        settings.redis.url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_S
    )


def sync_redis(settings: Settings) -> redis.Redis:
    import redis

    return redis.Redis.from_url(settings.redis.url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_S)
