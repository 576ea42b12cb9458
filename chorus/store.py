"""Redis connections and the one key layout every component uses."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from chorus.settings import Settings


class Keys:
    """Builds Redis keys under the configured prefix, so several deployments can share a server."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


def keys_for(settings: Settings) -> Keys:
    return Keys(settings.redis.key_prefix)


def async_redis(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis.url, decode_responses=False)


def sync_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis.url, decode_responses=False)
