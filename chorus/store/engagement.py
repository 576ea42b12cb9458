"""The latest engagement report of each persona on each of its platforms.

Kept apart from the persona's spec: a platform's figures arrive on their own schedule (whatever
relays them posts them), and a deleted persona's reports are retained and restored with it by
the persona scripts (``personas.py``), which name the same keys.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from chorus.models import Engagement, EngagementReport
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class EngagementRepo:
    """The latest engagement report of each persona on each of its platforms."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r, self._k = client, keys

    async def put(self, persona_id: str, report: EngagementReport) -> Engagement:
        engagement = Engagement(**report.model_dump(), persona_id=persona_id, reported_at=time.time())
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("engagement", persona_id), report.platform.value, engagement.model_dump_json())
            pipe.sadd(self._k("engaged"), persona_id)
            await pipe.execute()
        return engagement

    async def reported_personas(self) -> list[str]:
        """Personas with at least one report (the metrics refresh reads only these)."""
        members: set[bytes] = await self._r.smembers(self._k("engaged"))  # type: ignore[assignment]
        return sorted(m.decode() for m in members)

    async def latest_for(self, persona_ids: list[str]) -> dict[str, list[Engagement]]:
        """Each persona's reports (personas without one are left out), ordered by platform."""
        async with self._r.pipeline(transaction=False) as pipe:
            for persona_id in persona_ids:
                pipe.hgetall(self._k("engagement", persona_id))
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        return {
            persona_id: [Engagement.model_validate_json(reply[p]) for p in sorted(reply)]
            for persona_id, reply in zip(persona_ids, replies, strict=True)
            if reply
        }

    async def latest(self, persona_id: str) -> list[Engagement]:
        return (await self.latest_for([persona_id])).get(persona_id, [])

    async def delete(self, persona_id: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._k("engagement", persona_id))
            pipe.srem(self._k("engaged"), persona_id)
            await pipe.execute()
