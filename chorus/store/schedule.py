"""Which cadence slots have been queued: one key per slot, claimed once fleet-wide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chorus.settings import StoreSettings
from chorus.store.keys import Keys

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class ScheduleRepo:
    """Which cadence slots have been queued: one key per slot, claimed once fleet-wide."""

    def __init__(self, client: aioredis.Redis, keys: Keys, store: StoreSettings | None = None) -> None:
        self._r, self._k = client, keys
        self._ttl_s = (store or StoreSettings()).slot_ttl_s

    async def claim(self, persona_id: str, slot_key: str, job_id: str) -> bool:
        """Give the slot to this job: True for the one caller that gets it, so a slot is queued
        once however often (or on however many restarts) the scheduler runs."""
        key = self._k("slot", persona_id, slot_key)
        return bool(await self._r.set(key, job_id, nx=True, ex=self._ttl_s))

    async def jobs(self, persona_id: str, slot_keys: list[str]) -> list[str | None]:
        """The job queued for each slot: None when not (yet) queued."""
        if not slot_keys:
            return []
        raws: list[Any] = await self._r.mget([self._k("slot", persona_id, key) for key in slot_keys])
        return [raw.decode() if raw is not None else None for raw in raws]
