"""The Python API the rest of Chorus (HTTP API, CLI, campaigns) uses to run the fleet.

Reads go straight to Redis; work goes to the directory, which routes it to persona actors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import redis.asyncio as aioredis
from ray.actor import ActorHandle

from actors.directory import get_directory
from actors.gateway import get_gateway
from chorus.cadence import local_day, slots_on
from chorus.llm.types import BudgetExceeded
from chorus.persona import PersonaSpec
from chorus.settings import Settings
from chorus.state import (
    Audience,
    Engagement,
    EngagementRepo,
    EngagementReport,
    Job,
    JobEvent,
    JobRepo,
    PersonaRepo,
    PersonaStats,
    PostPage,
    PostRepo,
    PostStatus,
    Schedule,
    ScheduledSlot,
    ScheduleRepo,
    SpendLedger,
)
from chorus.store import async_redis, keys_for


class UnknownPersona(KeyError):
    def __init__(self, persona_id: str) -> None:
        super().__init__(persona_id)
        self.persona_id = persona_id

    def __str__(self) -> str:
        return f"persona {self.persona_id!r} does not exist"


class PlatformNotUsed(ValueError):
    """An engagement report for a platform the persona does not post to."""

    def __init__(self, persona_id: str, platform: str, platforms: list[str]) -> None:
        super().__init__(
            f"persona {persona_id!r} does not post to {platform}; its platforms are {', '.join(platforms)}"
        )


class Fleet:
    def __init__(self, settings: Settings, client: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or async_redis(settings)
        keys = keys_for(settings)
        self._keys = keys
        self.personas = PersonaRepo(self.redis, keys)
        self.jobs = JobRepo(self.redis, keys)
        self.post_repo = PostRepo(self.redis, keys, settings.fleet.recent_posts_window)
        self.engagement = EngagementRepo(self.redis, keys)
        self.slots = ScheduleRepo(self.redis, keys)
        self._directory: ActorHandle | None = None

    async def directory(self) -> ActorHandle:
        if self._directory is None:
            await get_gateway(self.settings).ping.remote()
            handle = get_directory(self.settings)
            await handle.start.remote()
            self._directory = handle
        return self._directory

    async def apply(self, spec: PersonaSpec) -> bool:
        """Create or replace a persona; its next job uses the new spec. True when it was new."""
        return await self.personas.put(spec)

    async def create(self, spec: PersonaSpec) -> bool:
        """Create a persona whose id is free; False, and nothing changed, when the id is taken."""
        return await self.personas.create(spec)

    async def delete(self, persona_id: str) -> None:
        if not await self.personas.delete(persona_id):
            raise UnknownPersona(persona_id)
        await self.engagement.delete(persona_id)

    async def report_engagement(self, persona_id: str, report: EngagementReport) -> Engagement:
        """Record what a platform reports of a persona's audience; the latest report counts."""
        spec = await self.persona(persona_id)
        platforms = [p.name.value for p in spec.platforms]
        if report.platform.value not in platforms:
            raise PlatformNotUsed(persona_id, report.platform.value, platforms)
        return await self.engagement.put(persona_id, report)

    async def engagements(self, persona_id: str) -> list[Engagement]:
        await self.persona(persona_id)
        return await self.engagement.latest(persona_id)

    async def persona(self, persona_id: str) -> PersonaSpec:
        spec = await self.personas.get(persona_id)
        if spec is None:
            raise UnknownPersona(persona_id)
        return spec

    def ledger(self, spec: PersonaSpec) -> SpendLedger:
        return SpendLedger.of(self.redis, self._keys, spec, self.settings.budget.default_daily_usd)

    async def generate(self, persona_id: str, count: int = 1) -> list[str]:
        """Queue `count` posts; returns their job ids at once.

        A persona already at its budget is refused here, before any job is queued; one that
        reaches it mid-job stops that job with `budget_exceeded`.
        """
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        spent = await ledger.spent_today()
        if spent >= ledger.budget_usd:
            raise BudgetExceeded(persona_id, spent, ledger.budget_usd, 0.0)
        directory = await self.directory()
        job_ids: list[str] = []
        for _ in range(count):
            job = await self.jobs.create(persona_id)
            await directory.submit.remote(job.id, persona_id)
            job_ids.append(job.id)
        return job_ids

    async def schedule(self, persona_id: str, now: float | None = None) -> Schedule:
        """The persona's posting slots today (its local day) and the jobs queued for them."""
        spec = await self.persona(persona_id)
        cadence = spec.cadence
        now = time.time() if now is None else now
        today = local_day(cadence, now)
        slots = slots_on(cadence, today)
        jobs = await self.slots.jobs(persona_id, [slot.key for slot in slots])
        return Schedule(
            persona_id=persona_id,
            autopost=cadence.autopost,
            timezone=cadence.timezone,
            day=today,
            slots=[
                ScheduledSlot(at=datetime.fromtimestamp(slot.at, UTC), job_id=job_id)
                for slot, job_id in zip(slots, jobs, strict=True)
            ],
        )

    async def queue_depth(self) -> int:
        """Jobs submitted fleet-wide and not finished (queued or running)."""
        return await self.jobs.pending_count()

    async def job(self, job_id: str) -> Job | None:
        return await self.jobs.get(job_id)

    def events(self, job_id: str, after: str = "0") -> AsyncIterator[JobEvent]:
        """Every event of the job from the start (late subscribers miss nothing), then live ones."""
        return self.jobs.events(job_id, after=after)

    async def wait(self, job_id: str, timeout_s: float) -> Job:
        """The job once finished; raises TimeoutError when it is still running at the deadline.

        Waits on the job's event stream rather than polling, so it returns as the end is written.
        """
        try:
            async with asyncio.timeout(timeout_s):
                async for event in self.jobs.events(job_id):
                    if event.type == "end":
                        break
        except TimeoutError:
            job = await self.jobs.get(job_id)
            state = job.status if job else "gone"
            raise TimeoutError(f"job {job_id} is still {state} after {timeout_s:.0f}s") from None
        job = await self.jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    async def posts(
        self,
        persona_id: str | None = None,
        status: PostStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> PostPage:
        return await self.post_repo.page(
            persona_id=persona_id, status=status, since=since, until=until, cursor=cursor, limit=limit
        )

    async def stats(self, persona_id: str) -> PersonaStats:
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        stats = await self.post_repo.stats(persona_id, await ledger.spent_today(), ledger.budget_usd)
        audience = Audience.of(await self.engagement.latest(persona_id), stats.cost_usd)
        return stats.model_copy(update=audience.model_dump())

    async def status(self) -> dict[str, object]:
        directory = await self.directory()
        result: dict[str, object] = await directory.status.remote()
        return result
