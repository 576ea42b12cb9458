"""Exact-match response cache in Redis: the same model, messages and sampling never pay twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from chorus.store.keys import Keys


class CachedResponse(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    tier: str


def cache_key(model: str, messages: Sequence[dict[str, str]], sampling: dict[str, Any]) -> str:
    # Canonical JSON, so dict ordering in callers cannot split one request into two entries.
    blob = json.dumps(
        {"model": model, "messages": list(messages), "sampling": sampling},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, client: aioredis.Redis, keys: Keys, ttl_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._ttl_s = ttl_s

    async def get(self, key: str) -> CachedResponse | None:
        raw = await self._redis.get(self._keys("cache", key))
        return CachedResponse.model_validate_json(raw) if raw else None

    async def put(self, key: str, response: CachedResponse) -> None:
        await self._redis.set(self._keys("cache", key), response.model_dump_json(), ex=self._ttl_s)
