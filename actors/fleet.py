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
from chorus.errors import (
    BudgetExceeded,
    NothingToRestore,
    PersonaExists,
    PlatformNotUsed,
    UnknownJob,
    UnknownPersona,
)
from chorus.llm.pricing import PriceTable, first_endpoint
from chorus.models import (
    TERMINAL_JOB_STATUSES,
    Audience,
    Engagement,
    EngagementReport,
    Job,
    JobEvent,
    PersonaStats,
    Post,
    PostPage,
    PostQuery,
    Schedule,
    ScheduledSlot,
)
from chorus.persona import PersonaSpec
from chorus.settings import Settings
from chorus.store.client import async_redis
from chorus.store.engagement import EngagementRepo
from chorus.store.jobs import JobRepo
from chorus.store.keys import keys_for
from chorus.store.personas import PersonaRepo
from chorus.store.posts import PostRepo
from chorus.store.schedule import ScheduleRepo
from chorus.store.spend import SpendLedger
from graphs.content.nodes.hook import HOOK_MAX_TOKENS
from graphs.content.prompts import hook_messages


async def _stop(task: asyncio.Future[None]) -> None:
    """Cancel `task` until it is done (a cancellation redis-py swallowed is sent again)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


class Fleet:
    def __init__(self, settings: Settings, client: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or async_redis(settings)
        keys = keys_for(settings)
        self._keys = keys
        self.personas = PersonaRepo(self.redis, keys)
        self.jobs = JobRepo(self.redis, keys, settings.store)
        self.post_repo = PostRepo(self.redis, keys, settings.fleet.recent_posts_window)
        self.engagement = EngagementRepo(self.redis, keys)
        self.slots = ScheduleRepo(self.redis, keys, settings.store)
        self._directory: ActorHandle | None = None
        self._prices = PriceTable(settings.pricing)

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
        """Delete a persona, restorable with its engagement history for
        `fleet.deleted_retention_days`; its actor is stopped (once its running jobs end)."""
        retain_s = self.settings.fleet.deleted_retention_days * 24 * 3600
        if not await self.personas.delete(persona_id, retain_s=retain_s):
            raise UnknownPersona(persona_id)
        directory = await self.directory()
        await directory.forget.remote(persona_id)

    async def restore(self, persona_id: str) -> PersonaSpec:
        """Bring back a persona deleted within the retention, with its engagement history."""
        outcome, spec = await self.personas.restore(persona_id)
        if outcome == "taken":
            raise PersonaExists(persona_id)
        if spec is None:
            raise NothingToRestore(persona_id, self.settings.fleet.deleted_retention_days)
        return spec

    async def delete_post(self, post_id: str) -> bool:
        """Delete a post; False when there is none. The persona's spend figures keep its cost."""
        return await self.post_repo.delete(post_id)

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

    async def find_persona(self, persona_id: str) -> PersonaSpec | None:
        """The persona's spec, or None when there is none (`persona` raises instead)."""
        return await self.personas.get(persona_id)

    async def list_personas(self) -> list[PersonaSpec]:
        return await self.personas.all()

    async def persona_count(self) -> int:
        return len(await self.personas.ids())

    async def post(self, post_id: str) -> Post | None:
        return await self.post_repo.get(post_id)

    async def budget_refusal(self, persona_id: str) -> BudgetExceeded:
        """The persona's budget as it stands, as the refusal of a new job's first model call."""
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        spent = await ledger.spent_today()
        return BudgetExceeded(persona_id, spent, ledger.budget_usd, self.first_call_usd(spec))

    async def ping_store(self) -> None:
        """Raises when the fleet's Redis does not answer."""
        await self.redis.ping()

    async def close(self) -> None:
        """Release the fleet's Redis connections."""
        await self.redis.aclose()

    def ledger(self, spec: PersonaSpec) -> SpendLedger:
        return SpendLedger.for_persona(self.redis, self._keys, spec, self.settings)

    def first_call_usd(self, spec: PersonaSpec) -> float:
        """The least a new job's first paid call (its hook) reserves on the persona's budget.

        The router's own worst case (chorus.llm.pricing) for the hook on the tier it tries first,
        on the persona's shortest topic: which topic the job's plan picks is not known yet, so a
        budget without room even for this one cannot start a post.
        """
        tier, model = first_endpoint(self.settings, spec.model_policy.hook)
        return min(
            self._prices.worst_case(tier, model, hook_messages(spec, topic), HOOK_MAX_TOKENS)
            for topic in spec.topics
        )

    async def generate(self, persona_id: str, count: int = 1) -> list[str]:
        """Queue `count` posts; returns their job ids at once.

        A persona whose budget cannot hold a new job's first model call is refused here, before
        any job is queued (such a job could only fail); one that reaches its budget mid-job
        stops that job with `budget_exceeded`.
        """
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        spent = await ledger.spent_today()
        first_call = self.first_call_usd(spec)
        # The same comparison (and float slack) as the ledger's reservation script.
        if spent + first_call > ledger.budget_usd + 1e-12:
            raise BudgetExceeded(persona_id, spent, ledger.budget_usd, first_call)
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
        The deadline does not rely on cancelling the read: redis-py loses a cancellation that
        lands before its read starts (the read then runs until the job ends), so the wait returns
        at the deadline and the read is cancelled until it stops.
        """
        if timeout_s > 0:
            end = asyncio.ensure_future(self._end_of(job_id))
            try:
                await asyncio.wait({end}, timeout=timeout_s)
            finally:
                await _stop(end)
        job = await self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        if job.status not in TERMINAL_JOB_STATUSES:
            raise TimeoutError(f"job {job_id} is still {job.status} after {timeout_s:.3g}s")
        return job

    async def _end_of(self, job_id: str) -> None:
        async for event in self.jobs.events(job_id):
            if event.type == "end":
                return

    async def posts(self, query: PostQuery) -> PostPage:
        return await self.post_repo.page(query)

    async def stats(self, persona_id: str) -> PersonaStats:
        spec = await self.persona(persona_id)
        ledger = self.ledger(spec)
        stats = await self.post_repo.stats(persona_id, await ledger.spent_today(), ledger.budget_usd)
        audience = Audience.from_reports(await self.engagement.latest(persona_id), stats.cost_usd)
        return stats.model_copy(update=audience.model_dump())

    async def status(self) -> dict[str, object]:
        directory = await self.directory()
        result: dict[str, object] = await directory.status.remote()
        return result
